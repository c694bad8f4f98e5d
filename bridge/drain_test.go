package bridge

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/buffer"
)

// ackCounter is a Queue that counts Ack calls and the records they ack.
type ackCounter struct {
	*buffer.Queue
	mu          sync.Mutex
	calls, seqs int
}

func (a *ackCounter) Ack(seqs ...uint64) error {
	a.mu.Lock()
	a.calls++
	a.seqs += len(seqs)
	a.mu.Unlock()
	return a.Queue.Ack(seqs...)
}

func (a *ackCounter) counts() (calls, seqs int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls, a.seqs
}

// The drain acks the buffer in batches, not once per message: a backlog
// of n records takes far fewer than n Ack calls, every record is acked
// exactly once, and the backlog ends empty.
func TestDrainAcksInBatches(t *testing.T) {
	t.Parallel()
	for _, protocol := range []string{"5", "3.1.1"} {
		t.Run("mqtt"+protocol, func(t *testing.T) {
			up := plainMosquitto(t)
			q := &ackCounter{Queue: openQueue(t, buffer.Config{})}
			cfg := testConfig("mqtt://" + up)
			cfg.Upstream.Protocol = protocol
			b := newBridge(t, cfg, q, nil, nil)
			const pubs, n = 4, 1000
			ingestConcurrently(t, b, pubs, n, 1, func(p int) string { return fmt.Sprintf("myhome/room%d/t", p) })
			o := newObserver(t, up, "sites/#", 1)
			startBridge(t, b)
			checkDelivery(t, o, pubs*n)
			waitFor(t, 20*time.Second, "backlog acked", func() bool { return b.Stats().BacklogMessages == 0 })
			calls, seqs := q.counts()
			if seqs != pubs*n {
				t.Errorf("%d records acked, want %d", seqs, pubs*n)
			}
			if calls > pubs*n/4 {
				t.Errorf("%d Ack calls for %d records: not batched", calls, pubs*n)
			}
			t.Logf("%d Ack calls for %d records", calls, seqs)
		})
	}
}

// The window holds at most maxInflightBytes of topics and payloads: with
// 1 MiB messages and an upstream that stopped acknowledging, 3 are in
// flight, not the 1024 the message window allows. After the link is cut
// (the 3.1.1 session is not resumed, so the flights are dropped and resent
// from the buffer) the budget is whole again and all arrive.
func TestInflightByteBudget(t *testing.T) {
	t.Parallel()
	for _, protocol := range []string{"5", "3.1.1"} {
		t.Run("mqtt"+protocol, func(t *testing.T) {
			up := plainMosquitto(t)
			px := newProxy(t, up)
			q := openQueue(t, buffer.Config{})
			cfg := testConfig("mqtt://" + px.addr())
			cfg.Upstream.Protocol = protocol
			cfg.StallTimeout = time.Hour
			b := newBridge(t, cfg, q, nil, nil)
			startBridge(t, b)
			waitFor(t, 10*time.Second, "connected", func() bool { return b.Stats().Connected })
			px.setFrozen(true)
			const n = 8
			payload := bytes.Repeat([]byte{'x'}, 1<<20)
			for range n {
				if err := b.Ingest(context.Background(), Message{Topic: "myhome/big", QoS: 1, Payload: payload}); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, 20*time.Second, "3 messages in flight", func() bool { return b.Stats().Inflight >= 3 })
			for range 5 {
				if got := b.Stats().Inflight; got != 3 {
					t.Fatalf("%d messages of 1 MiB in flight, want 3 (4 MiB budget)", got)
				}
				time.Sleep(20 * time.Millisecond)
			}
			px.cut()
			px.setFrozen(false)
			waitFor(t, 30*time.Second, "all forwarded", func() bool {
				s := b.Stats()
				return s.Forwarded >= n && s.BacklogMessages == 0
			})
		})
	}
}

// MQTT 5 properties reach the upstream; a message without any is sent
// without them.
func TestForwardProperties(t *testing.T) {
	t.Parallel()
	up := plainMosquitto(t)
	q := openQueue(t, buffer.Config{})
	b := newBridge(t, testConfig("mqtt://"+up), q, nil, nil)
	o := newObserver(t, up, "sites/gw1/myhome/#", 1)
	startBridge(t, b)
	with := Message{
		Topic: "myhome/props", QoS: 1, Payload: []byte("with"),
		ContentType: "text/plain", ResponseTopic: "myhome/reply", CorrelationData: []byte{1, 2},
		UserProperties: []UserProperty{{Key: "k", Value: "v"}}, MessageExpiry: 3600,
	}
	for _, m := range []Message{with, {Topic: "myhome/plain", QoS: 1, Payload: []byte("without")}} {
		if err := b.Ingest(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 20*time.Second, "both messages upstream", func() bool { return len(o.others()) >= 2 })
	for _, p := range o.others() {
		pp := p.Properties
		switch string(p.Payload) {
		case "with":
			if pp == nil || pp.ContentType != "text/plain" || pp.ResponseTopic != "myhome/reply" ||
				!bytes.Equal(pp.CorrelationData, []byte{1, 2}) || pp.User.Get("k") != "v" ||
				pp.MessageExpiry == nil || *pp.MessageExpiry == 0 || *pp.MessageExpiry > 3600 {
				t.Errorf("properties upstream: %+v", pp)
			}
		case "without":
			if pp != nil && (pp.ContentType != "" || pp.ResponseTopic != "" || pp.CorrelationData != nil || len(pp.User) > 0 || pp.MessageExpiry != nil) {
				t.Errorf("properties upstream for a message without any: %+v", pp)
			}
		default:
			t.Errorf("unexpected message %q on %s", p.Payload, p.Topic)
		}
	}
}
