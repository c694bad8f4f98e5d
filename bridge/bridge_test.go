package bridge

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fieldgate/fieldgate/buffer"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// badger's and glog's process-wide background goroutines.
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreTopFunction("github.com/dgraph-io/ristretto/v2/z.(*AllocatorPool).freeupAllocators"),
	)
}

// checkDelivery waits until want unique messages arrived and checks order.
func checkDelivery(t *testing.T, o *observer, want int) (dups int) {
	t.Helper()
	waitFor(t, 90*time.Second, fmt.Sprintf("%d messages upstream", want), func() bool {
		u, _, _ := o.counts()
		return u >= want
	})
	u, d, re := o.counts()
	if u != want {
		t.Errorf("unique messages upstream = %d, want %d", u, want)
	}
	if len(re) > 0 {
		t.Errorf("%d reorderings, first: %v", len(re), re[:min(len(re), 5)])
	}
	return d
}

// (a) upstream down during the whole publish phase; then up: everything
// arrives, in order per publisher.
func TestBacklogAfterOutage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		protocol string
		qos      byte
		pubs, n  int
	}{
		{"5", 1, 16, 1250},   // 20,000 messages
		{"3.1.1", 1, 4, 500}, // (e) the same path over MQTT 3.1.1
		{"5", 2, 4, 100},
		{"3.1.1", 2, 4, 100},
	} {
		t.Run(fmt.Sprintf("mqtt%s-qos%d", tc.protocol, tc.qos), func(t *testing.T) {
			up := plainMosquitto(t)
			px := newProxy(t, up)
			px.setDown(true)
			q := openQueue(t, buffer.Config{})
			cfg := testConfig("mqtt://" + px.addr())
			cfg.Upstream.Protocol = tc.protocol
			cfg.Forward[0].QoS = new(tc.qos)
			b := newBridge(t, cfg, q, nil, nil)
			startBridge(t, b)

			ingestConcurrently(t, b, tc.pubs, tc.n, tc.qos, func(int) string { return "myhome/hall/temperature" })
			total := tc.pubs * tc.n
			if s := b.Stats(); s.Connected || s.BacklogMessages != uint64(total) || s.Ingested != uint64(total) {
				t.Fatalf("while down: connected=%v backlog=%d ingested=%d, want false %d %d", s.Connected, s.BacklogMessages, s.Ingested, total, total)
			}
			o := newObserver(t, up, "sites/#", tc.qos)
			px.setDown(false)
			dups := checkDelivery(t, o, total)
			waitFor(t, 30*time.Second, "backlog acked", func() bool { return b.Stats().BacklogMessages == 0 })
			s := b.Stats()
			if s.Forwarded != uint64(total) || s.Inflight != 0 {
				t.Errorf("forwarded=%d inflight=%d, want %d 0", s.Forwarded, s.Inflight, total)
			}
			if s.ConnectFailures == 0 {
				t.Errorf("no connect failures counted while the upstream was down")
			}
			t.Logf("protocol %s: %d messages, %d duplicates, window %d", tc.protocol, total, dups, s.Window)
		})
	}
}

// (c) the link is cut and restored repeatedly during a drain: all arrive,
// no reordering, duplicates counted.
func TestLinkCutsDuringDrain(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		protocol string
		qos      byte
	}{
		{"mqtt5", "5", 1},
		{"mqtt3.1.1", "3.1.1", 1},
		// G5: QoS 2 over MQTT 5 with the session resumed on every reconnect
		// is exactly-once: no duplicates at all.
		{"mqtt5-qos2", "5", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := plainMosquitto(t)
			px := newProxy(t, up)
			q := openQueue(t, buffer.Config{})
			cfg := testConfig("mqtt://" + px.addr())
			cfg.Upstream.Protocol = tc.protocol
			cfg.Forward[0].QoS = new(tc.qos)
			cfg.ReplayRate.MessagesPerSecond = 4000 // long enough a drain to cut it several times
			b := newBridge(t, cfg, q, nil, nil)
			const pubs, n = 8, 500
			ingestConcurrently(t, b, pubs, n, tc.qos, func(p int) string { return fmt.Sprintf("myhome/room%d/t", p) })
			o := newObserver(t, up, "sites/#", tc.qos)
			startBridge(t, b)

			cuts := 0
			for cuts < 6 {
				before := b.Stats().Forwarded
				waitFor(t, 30*time.Second, "drain progress", func() bool {
					s := b.Stats()
					// Cut only a connection made after the previous cut.
					return s.Forwarded > before+200 && s.Connected && s.Reconnects >= uint64(cuts) || s.BacklogMessages == 0
				})
				if b.Stats().BacklogMessages == 0 {
					break
				}
				px.cut()
				cuts++
			}
			dups := checkDelivery(t, o, pubs*n)
			if cuts < 2 {
				t.Errorf("only %d cuts happened during the drain", cuts)
			}
			// The last cut may come after the last PUBACK (the buffer is
			// acked in batches, so the backlog lags): delivery then does
			// not wait for the reconnect.
			waitFor(t, 20*time.Second, "a reconnect after every cut", func() bool { return b.Stats().Reconnects >= uint64(cuts) })
			s := b.Stats()
			if tc.qos == 2 && (dups != 0 || s.Resent != 0) {
				t.Errorf("QoS 2 with a resumed session: %d duplicates upstream, %d resent, want 0", dups, s.Resent)
			}
			t.Logf("%d cuts, %d reconnects, %d resent, %d duplicates seen upstream", cuts, s.Reconnects, s.Resent, dups)
		})
	}
}

// Stall detection: an upstream that stops acknowledging (the proxy freezes
// the upstream→bridge direction) is dropped and reconnected; nothing lost.
func TestStallDetection(t *testing.T) {
	t.Parallel()
	for _, protocol := range []string{"5", "3.1.1"} {
		t.Run("mqtt"+protocol, func(t *testing.T) {
			up := plainMosquitto(t)
			px := newProxy(t, up)
			q := openQueue(t, buffer.Config{})
			cfg := testConfig("mqtt://" + px.addr())
			cfg.Upstream.Protocol = protocol
			cfg.StallTimeout = 300 * time.Millisecond
			cfg.Upstream.KeepAlive = new(60 * time.Second) // keepalive must not be what detects it
			b := newBridge(t, cfg, q, nil, nil)
			o := newObserver(t, up, "sites/#", 1)
			startBridge(t, b)
			waitFor(t, 10*time.Second, "connected", func() bool { return b.Stats().Connected })

			px.setFrozen(true)
			ingestConcurrently(t, b, 1, 100, 1, func(int) string { return "myhome/a" })
			waitFor(t, 20*time.Second, "a stall to be detected", func() bool { return b.Stats().Stalls > 0 })
			px.setFrozen(false)
			checkDelivery(t, o, 100)
			// The window (default 1024) may have sent all 100 before the
			// stall: delivery does not wait for the reconnect.
			waitFor(t, 20*time.Second, "a reconnect after the stall", func() bool { return b.Stats().Reconnects > 0 })
		})
	}
}

// (d) quota full under both policies.
func TestQuotaPolicies(t *testing.T) {
	t.Parallel()
	payload := make([]byte, 4096)
	t.Run("reject", func(t *testing.T) {
		q := openQueue(t, buffer.Config{MaxBytes: 64 << 10, WhenFull: buffer.Reject})
		b := newBridge(t, testConfig("mqtt://127.0.0.1:1"), q, nil, nil)
		var err error
		for i := 0; i < 100 && err == nil; i++ {
			err = b.Ingest(context.Background(), Message{Topic: "myhome/x", QoS: 1, Payload: payload})
		}
		if !errors.Is(err, buffer.ErrFull) {
			t.Fatalf("Ingest into a full buffer: %v, want buffer.ErrFull", err)
		}
		if s := b.Stats(); s.Rejected != 1 || s.Ingested == 0 {
			t.Errorf("rejected=%d ingested=%d, want 1 and >0", s.Rejected, s.Ingested)
		}
	})
	t.Run("drop-oldest", func(t *testing.T) {
		q := openQueue(t, buffer.Config{MaxBytes: 64 << 10, WhenFull: buffer.DropOldest})
		b := newBridge(t, testConfig("mqtt://127.0.0.1:1"), q, nil, nil)
		for i := range 100 {
			if err := b.Ingest(context.Background(), Message{Topic: "myhome/x", QoS: 1, Payload: payload}); err != nil {
				t.Fatalf("Ingest %d: %v", i, err)
			}
		}
		s := b.Stats()
		if s.Buffer.Quota == 0 || s.Ingested != 100 {
			t.Errorf("quota drops=%d ingested=%d, want >0 and 100", s.Buffer.Quota, s.Ingested)
		}
		if s.BacklogMessages+s.Buffer.Quota != 100 {
			t.Errorf("backlog %d + dropped %d != 100", s.BacklogMessages, s.Buffer.Quota)
		}
	})
}

// G5 across a restart: QoS 2 messages in flight when the bridge stops (the
// upstream's acknowledgements frozen) are completed by the next Bridge
// from the persisted session, with their packet identifiers: every message
// arrives exactly once.
func TestQoS2SessionSurvivesRestart(t *testing.T) {
	t.Parallel()
	up := plainMosquitto(t)
	px := newProxy(t, up)
	q := openQueue(t, buffer.Config{})
	dataDir := t.TempDir()
	cfg := testConfig("mqtt://" + px.addr())
	cfg.Forward[0].QoS = new(byte(2))
	cfg.StallTimeout = time.Hour // the freeze must not end the first connection
	cfg.Inflight = 32            // a full window well below the backlog
	o := newObserver(t, up, "sites/#", 2)
	const total = 300
	newB := func() *Bridge {
		b, err := New(cfg, Options{Gateway: "gw1", Queue: q, Logger: testLogger(t), DataDir: dataDir})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	b1 := newB()
	ingestConcurrently(t, b1, 1, total, 2, func(int) string { return "myhome/q2" })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b1.Run(ctx) }()
	waitFor(t, 30*time.Second, "some progress", func() bool { return b1.Stats().Forwarded >= 50 })
	px.setFrozen(true)
	waitFor(t, 30*time.Second, "a full window in flight", func() bool { return b1.Stats().Inflight >= int64(cfg.Inflight) })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	px.cut()
	px.setFrozen(false)
	inflight := b1.Stats().Inflight
	if inflight == 0 {
		t.Fatal("nothing was in flight at the restart")
	}

	b2 := newB()
	startBridge(t, b2)
	dups := checkDelivery(t, o, total)
	if dups != 0 {
		t.Errorf("%d duplicates after a restart with %d QoS 2 messages in flight", dups, inflight)
	}
	waitFor(t, 30*time.Second, "backlog acked", func() bool { return b2.Stats().BacklogMessages == 0 })
	if s := b2.Stats(); s.Resent != 0 {
		t.Errorf("resent = %d, want 0 (the session completed them)", s.Resent)
	}
}

// A fatal buffer error ends Run with that error: it must not wait for the
// loops that only stop with Run's context (issue 15: Run used to block).
func TestRunReturnsFatalBufferError(t *testing.T) {
	t.Parallel()
	up := plainMosquitto(t)
	q := openQueue(t, buffer.Config{})
	b := newBridge(t, testConfig("mqtt://"+up), q, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	waitFor(t, 10*time.Second, "connected", func() bool { return b.Stats().Connected })
	if err := q.Close(); err != nil { // the store is gone under the running bridge
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, buffer.ErrClosed) {
			t.Fatalf("Run = %v, want an error wrapping buffer.ErrClosed", err)
		}
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("Run did not return after a fatal buffer error")
	}
}
