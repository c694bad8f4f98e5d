package bridge

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/fieldgate/fieldgate/buffer"
)

// Stats is a snapshot of the bridge. Counters are monotonic for the life
// of the Bridge; the others are current values.
type Stats struct {
	State     string // "stopped", "connecting", "connected" or "backoff"
	Connected bool

	Connects        uint64 // successful connections
	Reconnects      uint64 // successful connections after the first
	ConnectFailures uint64
	Stalls          uint64 // connections dropped by stall detection

	BacklogMessages uint64        // records in the buffer not yet acknowledged upstream
	BacklogBytes    uint64        // their cost against the buffer quota
	OldestAge       time.Duration // age of the oldest record, 0 when empty
	Inflight        int64         // records sent and not yet acknowledged
	Window          int64         // effective in-flight window of the current/last connection

	Ingested    uint64  // records appended (one per matching forward route)
	Rejected    uint64  // Ingest calls refused because the buffer was full (reject policy)
	Forwarded   uint64  // records acknowledged by the upstream (PUBACK/PUBCOMP); acked in the buffer in batches, within 50ms
	Resent      uint64  // records sent again after a reconnect (possible duplicates upstream)
	LiveQoS0    uint64  // unbuffered QoS 0 messages handed to the upstream
	Received    uint64  // messages from subscribe routes published locally
	ForwardRate float64 // records forwarded per second, measured over the last 5s

	// LastError is why the upstream connection last failed or was lost
	// (empty if it never was) and LastErrorTime when.
	LastError     string
	LastErrorTime time.Time

	ReplayLimit ReplayRate // configured drain limits (0 = unlimited)
	Dropped     Dropped
	Buffer      buffer.Dropped // drops decided by the buffer (quota, max_age, checksum)
}

// Dropped counts messages the bridge discarded, by reason.
type Dropped struct {
	Corrupt      uint64 `json:"corrupt"`       // buffer records that failed to decode (acked, skipped)
	Expired      uint64 `json:"expired"`       // MQTT message expiry elapsed while buffered
	Rejected     uint64 `json:"rejected"`      // refused by the upstream with a reason code ≥ 0x80
	QoS0Offline  uint64 `json:"qos0_offline"`  // unbuffered QoS 0 while disconnected
	QoS0Overflow uint64 `json:"qos0_overflow"` // unbuffered QoS 0 beyond the hand-off queue
	LocalPublish uint64 `json:"local_publish"` // upstream messages the local broker refused
	Invalid      uint64 `json:"invalid"`       // mapped topic longer than MQTT allows
	TooLarge     uint64 `json:"too_large"`     // larger than the upstream's maximum packet size (set aside)
	Poison       uint64 `json:"poison"`        // the upstream connection broke on it again and again (set aside)
}

// Stats returns a snapshot. Safe for concurrent use.
func (b *Bridge) Stats() Stats {
	b.mu.Lock()
	state, connected := b.state, b.cur != nil
	lastErr, lastErrAt := b.lastErr, b.lastErrAt
	b.mu.Unlock()
	qs := b.q.Stats()
	s := Stats{
		State:           state,
		Connected:       connected,
		Connects:        b.st.connects.Load(),
		ConnectFailures: b.st.connectFailures.Load(),
		Stalls:          b.st.stalls.Load(),
		BacklogMessages: qs.Messages,
		BacklogBytes:    qs.Bytes,
		Inflight:        b.st.inflight.Load(),
		Window:          b.st.window.Load(),
		Ingested:        b.st.ingested.Load(),
		Rejected:        b.st.rejected.Load(),
		Forwarded:       b.st.forwarded.Load(),
		Resent:          b.st.resent.Load(),
		LiveQoS0:        b.st.live.Load(),
		Received:        b.st.received.Load(),
		ForwardRate:     math.Float64frombits(b.st.rate.Load()),
		LastError:       lastErr,
		LastErrorTime:   lastErrAt,
		ReplayLimit:     b.cfg.ReplayRate,
		Dropped: Dropped{
			Corrupt:      b.st.dropCorrupt.Load(),
			Expired:      b.st.dropExpired.Load(),
			Rejected:     b.st.dropRejectd.Load(),
			QoS0Offline:  b.st.dropOffline.Load(),
			QoS0Overflow: b.st.dropOverflow.Load(),
			LocalPublish: b.st.dropLocal.Load(),
			Invalid:      b.st.dropInvalid.Load(),
			TooLarge:     b.st.dropTooLarge.Load(),
			Poison:       b.st.dropPoison.Load(),
		},
		Buffer: qs.Dropped,
	}
	if s.Connects > 1 {
		s.Reconnects = s.Connects - 1
	}
	if !qs.OldestTime.IsZero() {
		s.OldestAge = max(time.Since(qs.OldestTime), 0)
	}
	return s
}

// noteDown records why the upstream connection failed or was lost.
func (b *Bridge) noteDown(err error) {
	b.mu.Lock()
	b.lastErr, b.lastErrAt = err.Error(), time.Now()
	b.mu.Unlock()
}

func mathFloat64bits(f float64) uint64 { return math.Float64bits(f) }

// pacer is a token bucket on messages and bytes per second (burst: one
// second's worth). A message larger than the burst is let through and
// paid for afterwards. Used by the drain goroutine only.
type pacer struct {
	msgRate, byteRate float64
	mu                sync.Mutex
	msgs, bytes       float64
	last              time.Time
}

func (p *pacer) wait(ctx context.Context, size int) error {
	if p.msgRate <= 0 && p.byteRate <= 0 {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if p.last.IsZero() {
		p.msgs, p.bytes, p.last = p.msgRate, p.byteRate, now
	}
	refill := func(now time.Time) {
		dt := now.Sub(p.last).Seconds()
		p.last = now
		p.msgs = min(p.msgs+dt*p.msgRate, p.msgRate)
		p.bytes = min(p.bytes+dt*p.byteRate, p.byteRate)
	}
	refill(now)
	var need time.Duration
	if p.msgRate > 0 && p.msgs < 1 {
		need = max(need, time.Duration((1-p.msgs)/p.msgRate*float64(time.Second)))
	}
	if p.byteRate > 0 && p.bytes < 0 {
		need = max(need, time.Duration(-p.bytes/p.byteRate*float64(time.Second)))
	}
	if need > 0 {
		t := time.NewTimer(need)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		refill(time.Now())
	}
	if p.msgRate > 0 {
		p.msgs--
	}
	if p.byteRate > 0 {
		p.bytes -= float64(size)
	}
	return nil
}
