package bridge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Message is one MQTT application message crossing the bridge.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	// Origin tells who produced the message; messages whose Origin is
	// bridge.Origin came from upstream and are never forwarded back.
	Origin          string
	ContentType     string
	ResponseTopic   string
	CorrelationData []byte
	UserProperties  []UserProperty
	// MessageExpiry in seconds, 0 = none (MQTT 5). When a buffered message
	// is sent, the time it spent in the buffer is deducted; a message that
	// expired in the buffer is dropped and counted as "expired".
	MessageExpiry uint32
}

// UserProperty is an MQTT 5 user property.
type UserProperty struct{ Key, Value string }

// record is what the bridge stores in the buffer: the message as it must be
// published upstream (topic already mapped, QoS already capped) plus the
// time it was accepted.
type record struct {
	Route    uint16 // index of the forward route (informational)
	Accepted time.Time
	Msg      Message
}

// Record encoding, version 1:
//
//	0x01 version
//	flags byte: bit0 retain
//	qos byte
//	uvarint route
//	varint accepted (unix nanoseconds)
//	uvarint message expiry
//	bytes topic, payload, content type, response topic, correlation data
//	uvarint n, then n × (bytes key, bytes value)
//
// where "bytes" is a uvarint length followed by that many bytes.
const recordVersion = 1

var errCorrupt = errors.New("corrupt record")

func encodeRecord(r *record) []byte {
	return encodeForward(r.Route, r.Accepted, "", r.Msg.QoS, &r.Msg)
}

// encodeForward encodes the record of m accepted for a forward route: as
// encodeRecord(&record{route, accepted, m}) with m's topic prefixed by
// prefix and its QoS replaced by qos, without building that message (the
// ingest path would otherwise allocate the upstream topic for nothing).
func encodeForward(route uint16, accepted time.Time, prefix string, qos byte, m *Message) []byte {
	n := 32 + len(prefix) + len(m.Topic) + len(m.Payload) + len(m.ContentType) + len(m.ResponseTopic) + len(m.CorrelationData)
	for _, p := range m.UserProperties {
		n += 4 + len(p.Key) + len(p.Value)
	}
	b := make([]byte, 0, n)
	var flags byte
	if m.Retain {
		flags |= 1
	}
	b = append(b, recordVersion, flags, qos)
	b = binary.AppendUvarint(b, uint64(route))
	b = binary.AppendVarint(b, accepted.UnixNano())
	b = binary.AppendUvarint(b, uint64(m.MessageExpiry))
	b = binary.AppendUvarint(b, uint64(len(prefix)+len(m.Topic)))
	b = append(append(b, prefix...), m.Topic...)
	b = appendBytes(b, m.Payload)
	b = appendBytes(b, []byte(m.ContentType))
	b = appendBytes(b, []byte(m.ResponseTopic))
	b = appendBytes(b, m.CorrelationData)
	b = binary.AppendUvarint(b, uint64(len(m.UserProperties)))
	for _, p := range m.UserProperties {
		b = appendBytes(b, []byte(p.Key))
		b = appendBytes(b, []byte(p.Value))
	}
	return b
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint(max uint64) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 || v > max {
		d.err = errCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint(1 << 31)
	if d.err == nil && n > uint64(len(d.b)) {
		d.err = errCorrupt
	}
	if d.err != nil {
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// decodeRecord parses data; any malformed input yields an error wrapping
// errCorrupt, never a panic.
func decodeRecord(data []byte) (record, error) {
	var r record
	if len(data) < 3 {
		return r, fmt.Errorf("%w: %d bytes", errCorrupt, len(data))
	}
	if data[0] != recordVersion {
		return r, fmt.Errorf("%w: unknown version %d", errCorrupt, data[0])
	}
	flags, qos := data[1], data[2]
	if flags&^1 != 0 || qos > 2 {
		return r, fmt.Errorf("%w: bad flags %#x or qos %d", errCorrupt, flags, qos)
	}
	d := decoder{b: data[3:]}
	r.Route = uint16(d.uvarint(0xffff))
	if d.err == nil {
		v, n := binary.Varint(d.b)
		if n <= 0 {
			d.err = errCorrupt
		} else {
			d.b = d.b[n:]
			r.Accepted = time.Unix(0, v)
		}
	}
	r.Msg.MessageExpiry = uint32(d.uvarint(0xffffffff))
	r.Msg.Topic = string(d.bytes())
	r.Msg.Payload = d.bytes()
	r.Msg.ContentType = string(d.bytes())
	r.Msg.ResponseTopic = string(d.bytes())
	r.Msg.CorrelationData = d.bytes()
	np := d.uvarint(1 << 31)
	if np > uint64(len(d.b)) { // each property takes at least 2 bytes
		d.err = errCorrupt
	}
	for i := uint64(0); i < np && d.err == nil; i++ {
		k, v := d.bytes(), d.bytes()
		r.Msg.UserProperties = append(r.Msg.UserProperties, UserProperty{Key: string(k), Value: string(v)})
	}
	if d.err != nil {
		return record{}, fmt.Errorf("%w: truncated or malformed field", errCorrupt)
	}
	if len(d.b) != 0 {
		return record{}, fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(d.b))
	}
	if err := checkTopicName(r.Msg.Topic); err != nil {
		return record{}, fmt.Errorf("%w: %v", errCorrupt, err)
	}
	r.Msg.Retain = flags&1 != 0
	r.Msg.QoS = qos
	if len(r.Msg.Payload) == 0 {
		r.Msg.Payload = nil
	}
	if len(r.Msg.CorrelationData) == 0 {
		r.Msg.CorrelationData = nil
	}
	return r, nil
}
