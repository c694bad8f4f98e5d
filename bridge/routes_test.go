package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/fieldgate/fieldgate/buffer"
)

// startMochi runs an in-process mochi broker on 127.0.0.1:0 as upstream.
func startMochi(t *testing.T) (*mqtt.Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := s.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.AddListener(listeners.NewNet("up", ln)); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, ln.Addr().String()
}

// loopbackLocal stands for the local broker: it records what the bridge
// publishes locally and, like the real broker, offers every local publish
// to Ingest.
type loopbackLocal struct {
	b  *Bridge
	mu sync.Mutex
	ms []Message
}

func (l *loopbackLocal) Publish(ctx context.Context, m Message) error {
	l.mu.Lock()
	l.ms = append(l.ms, m)
	l.mu.Unlock()
	return l.b.Ingest(ctx, m)
}

func (l *loopbackLocal) got() []Message {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ms)
}

// (g) subscribe routes with strip_prefix, the no-loop rule, the retained
// birth/will status and the JSON status document, against mochi.
func TestSubscribeRoutesAndStatus(t *testing.T) {
	t.Parallel()
	for _, protocol := range []string{"5", "3.1.1"} {
		t.Run("mqtt"+protocol, func(t *testing.T) {
			srv, addr := startMochi(t)
			px := newProxy(t, addr)
			q := openQueue(t, buffer.Config{})
			cfg := testConfig("mqtt://" + px.addr())
			cfg.Upstream.Protocol = protocol
			// Forwarding everything would send commands straight back up (and
			// round again) without the Origin rule.
			cfg.Forward = []ForwardRoute{{Filter: "#", Prefix: "sites/{gateway}/", QoS: new(byte(1))}}
			cfg.Subscribe = []SubscribeRoute{{Filter: "sites/{gateway}/cmd/#", StripPrefix: "sites/{gateway}/", Prefix: "local/"}}
			cfg.StatusInterval = new(20 * time.Millisecond)
			cfg.Defaults()
			local := &loopbackLocal{}
			b := newBridge(t, cfg, q, local, nil)
			local.b = b

			status := newObserver(t, addr, "sites/gw1/status", 1)
			doc := newObserver(t, addr, "sites/gw1/status/bridge", 0)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- b.Run(ctx) }()
			stop := func() {
				if cancel != nil {
					cancel()
					if err := <-done; err != nil {
						t.Errorf("Run: %v", err)
					}
					cancel = nil
				}
			}
			t.Cleanup(stop)

			statusPayloads := func() []string {
				var out []string
				for _, p := range status.others() {
					out = append(out, string(p.Payload))
				}
				return out
			}
			waitFor(t, 10*time.Second, "birth message", func() bool { return slices.Contains(statusPayloads(), "online") })
			// The subscription is made after the birth message: wait for it.
			waitFor(t, 10*time.Second, "subscription", func() bool {
				return len(srv.Topics.Subscribers("sites/gw1/cmd/boiler/set").Subscriptions) > 0
			})

			if err := srv.Publish("sites/gw1/cmd/boiler/set", []byte("42"), false, 1); err != nil {
				t.Fatal(err)
			}
			if err := srv.Publish("sites/gw1/other", []byte("not subscribed"), false, 1); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "command published locally", func() bool { return len(local.got()) > 0 })
			got := local.got()
			if len(got) != 1 || got[0].Topic != "local/cmd/boiler/set" || string(got[0].Payload) != "42" || got[0].Origin != Origin {
				t.Fatalf("local publishes = %+v, want one local/cmd/boiler/set 42 with Origin %q", got, Origin)
			}
			if s := b.Stats(); s.Ingested != 0 || s.Received != 1 {
				t.Errorf("ingested=%d received=%d: an upstream message was forwarded back (or not received)", s.Ingested, s.Received)
			}

			// The periodic status document.
			waitFor(t, 10*time.Second, "status document", func() bool { return len(doc.others()) > 0 })
			var sd statusDoc
			if err := json.Unmarshal(doc.others()[0].Payload, &sd); err != nil {
				t.Fatalf("status document: %v", err)
			}
			if sd.Gateway != "gw1" || !sd.Connected {
				t.Errorf("status document = %+v, want gateway gw1, connected", sd)
			}

			// An abrupt loss of the link publishes the retained will "offline".
			px.setDown(true)
			px.cut()
			waitFor(t, 20*time.Second, "will message", func() bool { return slices.Contains(statusPayloads(), "offline") })
			px.setDown(false)
			n := len(statusPayloads())
			waitFor(t, 20*time.Second, "birth after reconnect", func() bool {
				p := statusPayloads()
				return len(p) > n && p[len(p)-1] == "online"
			})

			// A graceful stop publishes "offline" itself (no will on a clean DISCONNECT).
			n = len(statusPayloads())
			stop()
			waitFor(t, 10*time.Second, "offline on shutdown", func() bool {
				p := statusPayloads()
				return len(p) > n && p[len(p)-1] == "offline"
			})
			if r, ok := srv.Topics.Retained.Get("sites/gw1/status"); !ok || string(r.Payload) != "offline" {
				t.Errorf("retained status = %q, want offline", r.Payload)
			}
		})
	}
}

// Username and password (password_file, trimmed) against an upstream that
// checks them, and an upstream that refuses one message (PUBACK reason
// code "not authorized"): that message is dropped and counted, the ones
// after it are delivered.
func TestPasswordAndRejectedPublish(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	ledger := &auth.Ledger{
		Auth: auth.AuthRules{{Username: "gw1", Password: "s3cret", Allow: true}, {Client: "observer-*", Allow: true}},
		ACL: auth.ACLRules{{Username: "gw1", Filters: auth.Filters{
			"sites/gw1/myhome/secret": auth.Deny,
			"sites/gw1/myhome/ok":     auth.ReadWrite,
			"sites/gw1/status/#":      auth.ReadWrite,
		}}},
	}
	if err := srv.AddHook(new(auth.Hook), &auth.Options{Ledger: ledger}); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewNet("up", ln)); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })

	dir := t.TempDir()
	pwFile := filepath.Join(dir, "upstream.pass")
	if err := os.WriteFile(pwFile, []byte("  s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o := newObserver(t, ln.Addr().String(), "sites/gw1/myhome/#", 1)
	q := openQueue(t, buffer.Config{})
	cfg := testConfig("mqtt://" + ln.Addr().String())
	cfg.Upstream.Username = "gw1"
	cfg.Upstream.PasswordFile = pwFile
	b := newBridge(t, cfg, q, nil, nil)
	ctx := context.Background()
	for i, topic := range []string{"myhome/ok", "myhome/secret", "myhome/ok"} {
		if err := b.Ingest(ctx, Message{Topic: topic, QoS: 1, Payload: fmt.Appendf(nil, "p:%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	startBridge(t, b)
	waitFor(t, 20*time.Second, "backlog drained", func() bool { return b.Stats().BacklogMessages == 0 })
	checkDelivery(t, o, 2)
	if s := b.Stats(); s.Dropped.Rejected != 1 || s.Forwarded != 2 || s.Connects == 0 {
		t.Errorf("rejected=%d forwarded=%d connects=%d, want 1, 2, >0", s.Dropped.Rejected, s.Forwarded, s.Connects)
	}

	// A wrong password never connects.
	if err := os.WriteFile(pwFile, []byte("wrong"), 0o600); err != nil {
		t.Fatal(err)
	}
	b2 := newBridge(t, cfg, openQueue(t, buffer.Config{}), nil, nil)
	startBridge(t, b2)
	waitFor(t, 20*time.Second, "refused connection attempts", func() bool { return b2.Stats().ConnectFailures >= 2 })
	if s := b2.Stats(); s.Connects != 0 {
		t.Errorf("connected with a wrong password")
	}
}

// QoS 0 without buffer_qos0: forwarded live when connected, dropped and
// counted when not; with buffer_qos0 it is buffered and delivered later.
func TestQoS0(t *testing.T) {
	t.Parallel()
	_, addr := startMochi(t)
	px := newProxy(t, addr)
	px.setDown(true)
	q := openQueue(t, buffer.Config{})
	cfg := testConfig("mqtt://" + px.addr())
	cfg.Forward = append(cfg.Forward, ForwardRoute{Filter: "buffered/#", Prefix: "sites/{gateway}/", BufferQoS0: true})
	cfg.Defaults()
	b := newBridge(t, cfg, q, nil, nil)
	o := newObserver(t, addr, "sites/gw1/#", 1)
	startBridge(t, b)
	ctx := context.Background()
	for _, m := range []Message{
		{Topic: "myhome/live", Payload: []byte("offline:0")},
		{Topic: "buffered/x", Payload: []byte("kept:0")},
	} {
		if err := b.Ingest(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if s := b.Stats(); s.Dropped.QoS0Offline != 1 || s.Ingested != 1 {
		t.Fatalf("while down: qos0_offline=%d ingested=%d, want 1 1", s.Dropped.QoS0Offline, s.Ingested)
	}
	px.setDown(false)
	waitFor(t, 20*time.Second, "connected", func() bool { return b.Stats().Connected })
	if err := b.Ingest(ctx, Message{Topic: "myhome/live", Payload: []byte("online:1")}); err != nil {
		t.Fatal(err)
	}
	checkDelivery(t, o, 2)
	if s := b.Stats(); s.LiveQoS0 != 1 {
		t.Errorf("live qos0 = %d, want 1", s.LiveQoS0)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.seen["sites/gw1/myhome/live|offline"] != nil {
		t.Errorf("a QoS 0 message published while offline was delivered")
	}
}
