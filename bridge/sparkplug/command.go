package sparkplug

import (
	"errors"
	"fmt"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Bounds of the NCMD/DCMD payloads DecodeCommand accepts. The metric count
// is checked on the wire before the payload is decoded: a payload of empty
// metrics costs hundreds of bytes of memory per two bytes of input.
const (
	maxCommandPayload = 256 << 10
	maxCommandMetrics = 1024
)

// Command is a decoded NCMD or DCMD addressed to this node.
type Command struct {
	// Rebirth: an NCMD set Node Control/Rebirth to true. The node answers
	// with NBIRTH and every DBIRTH, same bdSeq, without reconnecting.
	Rebirth bool
	// Writes are the DCMD's metric writes, in payload order, each already
	// converted to its point's datatype.
	Writes []Write
	// Rejected lists the metrics that were not acted on (unknown name or
	// alias, read-only point, value of the wrong type or out of range,
	// an unsupported node command), one *MetricError each. The rest of
	// the command still applies.
	Rejected []error
}

// Write is a write request to a device point.
type Write struct {
	Device string
	Point  string
	// Value has the point's datatype: bool (Boolean), string (String,
	// Text), int64 (Int8–Int64), uint64 (UInt8–UInt64), float64 (Float,
	// Double).
	Value any
}

// Text renders the value as the bare payload of the point's
// `<point topic>/set` write-back topic: true/false, a number, or a JSON
// string.
func (w Write) Text() string {
	switch v := w.Value.(type) {
	case bool:
		return strconv.FormatBool(v)
	case string:
		return strconv.Quote(v)
	case int64:
		return strconv.FormatInt(v, 10)
	case uint64:
		return strconv.FormatUint(v, 10)
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	}
	return fmt.Sprint(w.Value)
}

// MetricError is why one metric of a command was rejected. Metric is its
// name, or "alias N" when it came by alias only.
type MetricError struct {
	Metric string
	Err    error
}

func (e *MetricError) Error() string { return e.Metric + ": " + e.Err.Error() }
func (e *MetricError) Unwrap() error { return e.Err }

// ErrNotForThisNode is returned for a command topic of another group or
// edge node, or a message type that is not a command.
var ErrNotForThisNode = errors.New("sparkplug: not a command for this edge node")

// DecodeCommand decodes a message received on topic: an NCMD to this node
// or a DCMD to one of its devices. It returns an error (and no command)
// when the topic is not such a command (wrapping ErrNotForThisNode), the
// device is unknown, or the payload is not a Sparkplug payload; problems
// with single metrics go to Command.Rejected. Metrics are matched by name
// first, then by alias. It is safe for any input.
func (n *Node) DecodeCommand(topic string, payload []byte) (Command, error) {
	t, err := ParseTopic(topic)
	if err != nil {
		return Command{}, fmt.Errorf("%v: %w", err, ErrNotForThisNode)
	}
	if t.Group != n.group || t.EdgeNode != n.edge || t.Type != NCmd && t.Type != DCmd {
		return Command{}, fmt.Errorf("topic %q: %w", topic, ErrNotForThisNode)
	}
	var d *deviceMetrics
	if t.Type == DCmd {
		if d = n.devices[t.Device]; d == nil {
			return Command{}, fmt.Errorf("DCMD: unknown device %q", t.Device)
		}
	}
	if len(payload) > maxCommandPayload {
		return Command{}, fmt.Errorf("%s: payload is %d bytes, limit %d", t.Type, len(payload), maxCommandPayload)
	}
	if n, err := countMetrics(payload); err != nil {
		return Command{}, fmt.Errorf("%s: decode payload: %w", t.Type, err)
	} else if n > maxCommandMetrics {
		return Command{}, fmt.Errorf("%s: %d metrics, limit %d", t.Type, n, maxCommandMetrics)
	}
	var p Payload
	if err := proto.Unmarshal(payload, &p); err != nil {
		return Command{}, fmt.Errorf("%s: decode payload: %w", t.Type, err)
	}
	var c Command
	for _, m := range p.GetMetrics() {
		label := m.GetName()
		if m.Name == nil {
			label = "alias " + strconv.FormatUint(m.GetAlias(), 10)
		}
		reject := func(err error) { c.Rejected = append(c.Rejected, &MetricError{Metric: label, Err: err}) }
		if t.Type == NCmd {
			if m.GetName() != MetricRebirth && (m.Name != nil || m.GetAlias() != AliasRebirth) {
				reject(errors.New("not a writable node metric"))
				continue
			}
			v, err := metricValue(m, DataType_Boolean)
			if err != nil {
				reject(err)
				continue
			}
			c.Rebirth = c.Rebirth || v.(bool)
			continue
		}
		var pm *metric
		if m.Name != nil {
			pm = d.byName[m.GetName()]
		} else if am := n.byAlias[m.GetAlias()]; am != nil && am.device == d {
			pm = am
		}
		if pm == nil {
			reject(fmt.Errorf("no such metric on device %q", d.name))
			continue
		}
		if !pm.point.Writable {
			reject(errors.New("metric is read-only"))
			continue
		}
		v, err := metricValue(m, pm.point.DataType)
		if err != nil {
			reject(err)
			continue
		}
		c.Writes = append(c.Writes, Write{Device: d.name, Point: pm.point.Name, Value: v})
	}
	return c, nil
}

// countMetrics counts the Payload.metrics fields of an encoded payload
// without decoding them.
func countMetrics(b []byte) (int, error) {
	const metricsField = 2
	n := 0
	for len(b) > 0 {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return 0, protowire.ParseError(l)
		}
		b = b[l:]
		l = protowire.ConsumeFieldValue(num, typ, b)
		if l < 0 {
			return 0, protowire.ParseError(l)
		}
		b = b[l:]
		if num == metricsField {
			n++
		}
	}
	return n, nil
}
