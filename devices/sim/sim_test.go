package sim

import (
	"context"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/fieldgate/fieldgate/devices"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func f64(v float64) *float64 { return &v }

func compile(t *testing.T, cfg devices.DeviceConfig) *devices.Device {
	t.Helper()
	if err := devices.Validate([]devices.DeviceConfig{cfg}, map[string]devices.Driver{"sim": New()}); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	cfg.Defaults()
	dev := &devices.Device{Config: cfg}
	for i := range cfg.Points {
		dev.Points = append(dev.Points, &devices.Point{Config: cfg.Points[i], Device: dev, Index: i})
	}
	return dev
}

var demo = devices.DeviceConfig{Name: "demo", Driver: "sim", Topic: "myhome/livingroom/{device}/{point}", Points: []devices.PointConfig{
	{Name: "sine", Sim: "sine", Min: f64(0), Max: f64(10), Period: 4 * time.Second},
	{Name: "counter", Sim: "counter", Value: f64(10), Step: f64(2)},
	{Name: "toggle", Sim: "toggle"},
	{Name: "constant", Sim: "constant", Value: f64(3)},
	{Name: "random", Sim: "random", Min: f64(-1), Max: f64(1), Step: f64(0.5)},
}}

func TestKinds(t *testing.T) {
	now := time.Unix(1000, 0) // a whole number of periods since the epoch: phase 0
	clock := func() time.Time { return now }
	dev := compile(t, demo)
	conn, err := New(WithClock(clock), WithSeed(7)).Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pc := conn.(*Conn)
	var rows [][]any
	for range 4 {
		rs, err := pc.Poll(context.Background(), dev.Points)
		if err != nil {
			t.Fatal(err)
		}
		var row []any
		for _, r := range rs {
			if r.Err != nil || !r.Time.Equal(now) {
				t.Fatalf("reading %+v", r)
			}
			row = append(row, r.Value)
		}
		rows = append(rows, row)
		now = now.Add(time.Second)
	}
	round := cmp.Comparer(func(a, b float64) bool { return math.Abs(a-b) < 1e-9 })
	for i, want := range []float64{5, 10, 5, 0} {
		if diff := cmp.Diff(want, rows[i][0], round); diff != "" {
			t.Errorf("sine at %ds (-want +got):\n%s", i, diff)
		}
	}
	col := func(j int) []any {
		var c []any
		for _, r := range rows {
			c = append(c, r[j])
		}
		return c
	}
	if diff := cmp.Diff([]any{10.0, 12.0, 14.0, 16.0}, col(1)); diff != "" {
		t.Errorf("counter (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]any{false, true, false, true}, col(2)); diff != "" {
		t.Errorf("toggle (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]any{3.0, 3.0, 3.0, 3.0}, col(3)); diff != "" {
		t.Errorf("constant (-want +got):\n%s", diff)
	}
	walk := col(4)
	if walk[0] != 0.0 {
		t.Errorf("random walk starts at %v, want the middle 0", walk[0])
	}
	for i := 1; i < len(walk); i++ {
		a, b := walk[i-1].(float64), walk[i].(float64)
		if b < -1 || b > 1 || math.Abs(b-a) > 0.5 {
			t.Errorf("random walk step %v -> %v leaves [-1,1] or exceeds step 0.5", a, b)
		}
	}
	// Same seed, same walk; another seed, another walk.
	again := func(seed uint64) []any {
		c, _ := New(WithClock(clock), WithSeed(seed)).Open(dev)
		var out []any
		for range 4 {
			rs, _ := c.(*Conn).Poll(context.Background(), dev.Points[4:])
			out = append(out, rs[0].Value)
		}
		return out
	}
	if !slices.Equal(again(7), walk) {
		t.Error("random walk is not reproducible with the same seed")
	}
	if slices.Equal(again(8), walk) {
		t.Error("random walk ignores the seed")
	}
}

func TestWriteHoldsValue(t *testing.T) {
	dev := compile(t, demo)
	conn, _ := New().Open(dev)
	pc := conn.(*Conn)
	ctx := context.Background()
	if err := pc.Write(ctx, dev.Points[1], 99.0); err != nil {
		t.Fatal(err)
	}
	if err := pc.Write(ctx, dev.Points[2], true); err != nil {
		t.Fatal(err)
	}
	if err := pc.Write(ctx, dev.Points[2], 1.0); err == nil {
		t.Error("a toggle accepted a number")
	}
	if err := pc.Write(ctx, dev.Points[3], false); err == nil {
		t.Error("a constant accepted a bool")
	}
	for range 2 {
		rs, _ := pc.Poll(ctx, dev.Points[1:3])
		if rs[0].Value != 99.0 || rs[1].Value != true {
			t.Errorf("after write: %v %v", rs[0].Value, rs[1].Value)
		}
	}
}

type pub struct {
	mu   sync.Mutex
	msgs []string
}

func (p *pub) Publish(ctx context.Context, m devices.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.msgs = append(p.msgs, m.Topic+" "+string(m.Payload))
	return nil
}

type sub struct {
	fns map[string]func(devices.Message)
}

func (s *sub) Subscribe(filter string, fn func(devices.Message)) (func(), error) {
	s.fns[filter] = fn
	return func() {}, nil
}

// TestDemoWriteBack runs the DESIGN.md demo device through the devices core
// and writes a setpoint, as an operator would with mosquitto_pub.
func TestDemoWriteBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := demo
		cfg.Points = append(slices.Clone(cfg.Points), devices.PointConfig{Name: "setpoint", Sim: "constant", Value: f64(20), Writable: true, Min: f64(5), Max: f64(30), Unit: "°C"})
		p, s := &pub{}, &sub{fns: map[string]func(devices.Message){}}
		set, err := devices.New([]devices.DeviceConfig{cfg}, devices.Options{Gateway: "gw", Drivers: map[string]devices.Driver{"sim": New()}, Publisher: p, Subscriber: s})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- set.Run(ctx) }()
		synctest.Wait()
		s.fns["myhome/livingroom/demo/setpoint/set"](devices.Message{Payload: []byte("22.5")})
		synctest.Wait()
		time.Sleep(time.Second)
		synctest.Wait()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, m := range p.msgs {
			topic, _, _ := strings.Cut(m, " ")
			if slices.Contains([]string{"myhome/livingroom/demo/setpoint", "myhome/livingroom/demo/setpoint/set/result", "myhome/livingroom/demo/availability"}, topic) {
				got = append(got, m)
			}
		}
		ts0 := `"ts":"2000-01-01T00:00:00.000Z"`
		want := []string{
			"myhome/livingroom/demo/availability online",
			`myhome/livingroom/demo/setpoint {"value":20,"unit":"°C",` + ts0 + `}`,
			`myhome/livingroom/demo/setpoint {"value":22.5,"unit":"°C",` + ts0 + `}`,
			`myhome/livingroom/demo/setpoint/set/result {"ok":true,"value":22.5}`,
			// The next poll reads the written value back: it held.
			`myhome/livingroom/demo/setpoint {"value":22.5,"unit":"°C","ts":"2000-01-01T00:00:01.000Z"}`,
			"myhome/livingroom/demo/availability offline",
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
}
