package bridge

import (
	"fmt"
)

// Messages the upstream can never take. An upstream refuses a PUBLISH
// larger than its maximum packet size by closing the connection; resending
// the same record after every reconnect blocked the queue behind it for
// good. A record is set aside instead — acknowledged in the buffer, counted
// (Dropped.TooLarge, Dropped.Poison) and logged once with its topic and
// size — when
//
//   - its PUBLISH packet is larger than the upstream's limit: the Maximum
//     Packet Size of an MQTT 5 CONNACK or upstream.max_packet_size,
//     whichever is smaller; or
//   - it was the oldest unacknowledged record each time the connection was
//     lost, poisonLimit times in a row (an upstream that closes the
//     connection on it without saying why, e.g. a 3.1.1 broker with an
//     unconfigured size limit).

// poisonLimit is how many connection losses in a row with the same oldest
// unacknowledged record set it aside.
const poisonLimit = 5

// poison tracks the record at the head of the window when connections end.
// Owned by Run's goroutine.
type poison struct {
	seq   uint64 // oldest unacknowledged record when the last connection ended
	count int    // connections lost in a row with seq at the head
}

// lost records that a connection ended with head the oldest unacknowledged
// record (0: none).
func (p *poison) lost(head uint64) {
	switch {
	case head == 0:
		p.seq, p.count = 0, 0
	case head == p.seq:
		p.count++
	default:
		p.seq, p.count = head, 1
	}
}

func (p *poison) is(seq uint64) bool { return seq != 0 && seq == p.seq && p.count >= poisonLimit }

// packetLimit is the largest PUBLISH the upstream takes on l; 0 = no limit.
func (b *Bridge) packetLimit(l link) int {
	lim := int(b.cfg.Upstream.MaxPacketSize)
	if n := l.maxPacketSize(); n > 0 && (lim == 0 || n < lim) {
		lim = n
	}
	return lim
}

// publishSize is the size in bytes of m's PUBLISH packet on the wire.
func publishSize(m *Message, v5 bool) int {
	n := 2 + len(m.Topic) + len(m.Payload)
	if m.QoS > 0 {
		n += 2 // packet identifier
	}
	if v5 {
		p := 0
		if m.ContentType != "" {
			p += 3 + len(m.ContentType)
		}
		if m.ResponseTopic != "" {
			p += 3 + len(m.ResponseTopic)
		}
		if m.CorrelationData != nil {
			p += 3 + len(m.CorrelationData)
		}
		if m.MessageExpiry > 0 {
			p += 5
		}
		for _, u := range m.UserProperties {
			p += 5 + len(u.Key) + len(u.Value)
		}
		n += varintLen(p) + p
	}
	return 1 + varintLen(n) + n
}

func varintLen(n int) int {
	l := 1
	for n >= 128 {
		n /= 128
		l++
	}
	return l
}

// setAside acknowledges record e in the buffer without sending it, counts
// it and logs it once.
func (b *Bridge) setAside(e *entry, why string, size int) error {
	if err := b.q.Ack(e.seq); err != nil {
		return bufferErr("ack", err)
	}
	b.cursor = e.seq
	b.log.Error("message set aside: the upstream cannot take it ("+why+"); it is dropped and the queue moves on",
		"topic", e.rec.Msg.Topic, "size", size, "seq", e.seq)
	return nil
}

// oversized decides whether record e must be set aside before it is sent
// on l; it does so and returns true.
func (b *Bridge) oversized(l link, e *entry) (bool, error) {
	size := publishSize(&e.rec.Msg, b.cfg.Upstream.Protocol == "5")
	if lim := b.packetLimit(l); lim > 0 && size > lim {
		b.st.dropTooLarge.Add(1)
		return true, b.setAside(e, fmt.Sprintf("%d-byte packet, the upstream takes at most %d", size, lim), size)
	}
	if b.poison.is(e.seq) {
		b.st.dropPoison.Add(1)
		b.poison.lost(0)
		return true, b.setAside(e, fmt.Sprintf("the connection was lost %d times in a row with it unacknowledged", poisonLimit), size)
	}
	return false, nil
}
