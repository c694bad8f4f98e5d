package homeassistant

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fieldgate/fieldgate/devices"
)

// fakeBroker records publishes and delivers them to subscribers (retained
// ones at subscribe time, as the gateway's broker does).
type fakeBroker struct {
	mu       sync.Mutex
	log      []string // "topic payload" (payload "<empty>" for a clear)
	retained map[string][]byte
	subs     map[string]func(devices.Message)
}

func newFakeBroker() *fakeBroker {
	return &fakeBroker{retained: map[string][]byte{}, subs: map[string]func(devices.Message){}}
}

func (b *fakeBroker) Publish(_ context.Context, m devices.Message) error {
	b.mu.Lock()
	p := string(m.Payload)
	if p == "" {
		p = "<empty>"
	}
	b.log = append(b.log, m.Topic+" "+p)
	if m.Retain {
		if len(m.Payload) == 0 {
			delete(b.retained, m.Topic)
		} else {
			b.retained[m.Topic] = m.Payload
		}
	}
	fn := b.subs[m.Topic]
	b.mu.Unlock()
	if fn != nil {
		fn(m)
	}
	return nil
}

func (b *fakeBroker) Subscribe(filter string, fn func(devices.Message)) (func(), error) {
	b.mu.Lock()
	b.subs[filter] = fn
	ret, ok := b.retained[filter]
	b.mu.Unlock()
	if ok {
		fn(devices.Message{Topic: filter, Payload: ret, Retain: true})
	}
	return func() {
		b.mu.Lock()
		delete(b.subs, filter)
		b.mu.Unlock()
	}, nil
}

func (b *fakeBroker) take() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.log
	b.log = nil
	return out
}

func (b *fakeBroker) waitLog(t *testing.T, n int) []string {
	t.Helper()
	var got []string
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < n {
		if time.Now().After(deadline) {
			t.Fatalf("got %d messages, want %d: %q", len(got), n, got)
		}
		got = append(got, b.take()...)
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // nothing more should follow
	if extra := b.take(); len(extra) > 0 {
		t.Fatalf("unexpected extra messages %q after %q", extra, got)
	}
	return got
}

func plan(status, avail string, msgs ...string) *Plan {
	p := &Plan{Status: status, Availability: avail, QoS: 1}
	for _, m := range msgs {
		p.Messages = append(p.Messages, Message{Topic: "ha/sensor/gw/" + m + "/config", Payload: []byte(`{"name":"` + m + `"}`)})
	}
	return p
}

func cfgLine(m string) string { return fmt.Sprintf(`ha/sensor/gw/%s/config {"name":"%s"}`, m, m) }

// The whole lifecycle: start (availability online, every config), Home
// Assistant's birth (every config again), an update (removed cleared,
// changed and new sent, unchanged untouched), a retained old birth ignored,
// stop (availability offline), and a restart that clears what was removed
// while stopped.
func TestRunnerLifecycle(t *testing.T) {
	b := newFakeBroker()
	state := filepath.Join(t.TempDir(), "ha.json")
	r, err := NewRunner(plan("ha/status", "gw/status", "a", "b", "c"), RunOptions{Publisher: b, Subscriber: b, StateFile: state})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()

	if diff := cmp.Diff([]string{"gw/status online", cfgLine("a"), cfgLine("b"), cfgLine("c")}, b.waitLog(t, 4)); diff != "" {
		t.Errorf("start (-want +got):\n%s", diff)
	}
	_ = b.Publish(ctx, devices.Message{Topic: "ha/status", Payload: []byte("online")})
	if diff := cmp.Diff([]string{"ha/status online", cfgLine("a"), cfgLine("b"), cfgLine("c")}, b.waitLog(t, 4)); diff != "" {
		t.Errorf("birth (-want +got):\n%s", diff)
	}
	_ = b.Publish(ctx, devices.Message{Topic: "ha/status", Payload: []byte("offline")})
	b.waitLog(t, 1) // HA's own will; nothing is sent for it

	next := plan("ha/status", "gw/status", "a", "c", "d")
	next.Messages[1].Payload = []byte(`{"name":"c2"}`)
	r.Update(next)
	want := []string{"ha/sensor/gw/b/config <empty>", `ha/sensor/gw/c/config {"name":"c2"}`, cfgLine("d")}
	if diff := cmp.Diff(want, b.waitLog(t, 3)); diff != "" {
		t.Errorf("update (-want +got):\n%s", diff)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"gw/status offline"}, b.take()); diff != "" {
		t.Errorf("stop (-want +got):\n%s", diff)
	}

	// Restart with "d" gone from the config: cleared from the state file's
	// memory; a retained "online" on the status topic is not a new birth.
	_ = b.Publish(context.Background(), devices.Message{Topic: "ha/status", Payload: []byte("online"), Retain: true})
	b.take()
	r2, err := NewRunner(plan("ha/status", "gw/status", "a", "c"), RunOptions{Publisher: b, Subscriber: b, StateFile: state})
	if err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	go func() { done <- r2.Run(ctx2) }()
	got := b.waitLog(t, 4)
	want = []string{"gw/status online", "ha/sensor/gw/d/config <empty>", cfgLine("a"), cfgLine("c")}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("restart (-want +got):\n%s", diff)
	}
	var retained []string
	b.mu.Lock()
	for k := range b.retained {
		retained = append(retained, k)
	}
	b.mu.Unlock()
	slices.Sort(retained)
	if diff := cmp.Diff([]string{"gw/status", "ha/sensor/gw/a/config", "ha/sensor/gw/c/config", "ha/status"}, retained); diff != "" {
		t.Errorf("retained (-want +got):\n%s", diff)
	}
	cancel2()
	<-done
}
