package devices

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type harness struct {
	t    *testing.T
	set  *Set
	pub  *fakePub
	sub  *fakeSub
	drv  *fakeDriver
	stop func()
	t0   time.Time
	logs *syncBuffer
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// count returns how many log lines contain substr.
func (s *syncBuffer) count(substr string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), substr)
}

// start builds a Set over a fake driver and runs it; must be called inside
// a synctest bubble. stop cancels Run and waits for it.
func start(t *testing.T, drv *fakeDriver, cfgs ...DeviceConfig) *harness {
	t.Helper()
	h := &harness{t: t, pub: &fakePub{}, sub: &fakeSub{}, drv: drv, t0: time.Now(), logs: &syncBuffer{}}
	var err error
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	h.set, err = New(cfgs, Options{Gateway: "gw1", Drivers: map[string]Driver{"fake": drv}, Publisher: h.pub, Subscriber: h.sub, Logger: log})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.set.Run(ctx) }()
	h.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	synctest.Wait()
	return h
}

// at returns the ts string of t0+d.
func (h *harness) at(d time.Duration) string { return formatTS(h.t0.Add(d)) }

// advance moves the fake clock by d and lets every goroutine settle.
func advance(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

func TestPollSchedulePerPoint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		drv := newFakeDriver()
		drv.values["a"], drv.values["b"], drv.values["c"] = 1.0, 2.0, 3.0
		h := start(t, drv, DeviceConfig{Name: "d", Driver: "fake", Topic: "x/{device}/{point}", Poll: 3 * time.Second,
			Points: []PointConfig{{Name: "a", Poll: 2 * time.Second}, {Name: "b"}, {Name: "c", Poll: 2 * time.Second}}})
		advance(6*time.Second + time.Millisecond)
		h.stop()
		var got []string
		for _, p := range drv.polls {
			got = append(got, p.at.Sub(h.t0).String()+" "+strings.Join(p.points, ","))
		}
		want := []string{"0s a,b,c", "2s a,c", "3s b", "4s a,c", "6s a,b,c"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("polls (-want +got):\n%s", diff)
		}
	})
}

func TestDeadbandHeartbeatPayloads(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		drv := newFakeDriver()
		drv.values["t"], drv.values["n"], drv.values["s"], drv.values["e"] = 20.0, int64(7), "on", int64(3)
		h := start(t, drv, DeviceConfig{Name: "boiler", Driver: "fake", Topic: "home/{device}/{point}", Poll: time.Second,
			Points: []PointConfig{
				{Name: "t", Unit: "°C", Deadband: 0.5, Heartbeat: new(10 * time.Second)},
				{Name: "n", Scale: f64(0.1), Offset: 1, DeadbandPercent: 10},
				{Name: "s", Retain: new(true), QoS: iptr(0), Heartbeat: new(time.Hour)},
				{Name: "e"}, // neither deadband nor heartbeat: every reading
			}})
		first := h.pub.take()
		want := []string{
			"home/boiler/availability online",
			`home/boiler/t {"value":20,"unit":"°C","ts":"` + h.at(0) + `"}`,
			`home/boiler/n {"value":1.7,"ts":"` + h.at(0) + `"}`,
			`home/boiler/s {"value":"on","ts":"` + h.at(0) + `"}`,
			`home/boiler/e {"value":3,"ts":"` + h.at(0) + `"}`,
		}
		if diff := cmp.Diff(want, lines(first)); diff != "" {
			t.Errorf("first poll (-want +got):\n%s", diff)
		}
		if !first[0].Retain || first[0].QoS != 1 || !first[3].Retain || first[3].QoS != 0 || first[1].Retain || first[1].QoS != 1 {
			t.Errorf("qos/retain wrong: %+v", first)
		}
		// Below every deadband: nothing.
		drv.set(func(d *fakeDriver) { d.values["t"], d.values["n"] = 20.4, int64(8) }) // n: 1.8, Δ0.1 < 10% of 1.7
		advance(time.Second)
		if diff := cmp.Diff([]string{`home/boiler/e {"value":3,"ts":"` + h.at(time.Second) + `"}`}, lines(h.pub.take())); diff != "" {
			t.Errorf("inside the deadband only e, which publishes every reading (-want +got):\n%s", diff)
		}
		drv.set(func(d *fakeDriver) { d.values["t"], d.values["n"], d.values["s"] = 20.5, int64(9), "off" })
		advance(time.Second)
		want = []string{
			`home/boiler/t {"value":20.5,"unit":"°C","ts":"` + h.at(2*time.Second) + `"}`,
			`home/boiler/n {"value":1.9,"ts":"` + h.at(2*time.Second) + `"}`,
			`home/boiler/s {"value":"off","ts":"` + h.at(2*time.Second) + `"}`,
			`home/boiler/e {"value":3,"ts":"` + h.at(2*time.Second) + `"}`,
		}
		if diff := cmp.Diff(want, lines(h.pub.take())); diff != "" {
			t.Errorf("change beyond deadband (-want +got):\n%s", diff)
		}
		// Unchanged: only e every poll, and t's heartbeat 10s after its last publish.
		advance(9 * time.Second)
		for _, l := range lines(h.pub.take()) {
			if !strings.HasPrefix(l, "home/boiler/e ") {
				t.Errorf("published before the heartbeat: %q", l)
			}
		}
		advance(time.Second)
		want = []string{
			`home/boiler/t {"value":20.5,"unit":"°C","ts":"` + h.at(12*time.Second) + `"}`,
			`home/boiler/e {"value":3,"ts":"` + h.at(12*time.Second) + `"}`,
		}
		if diff := cmp.Diff(want, lines(h.pub.take())); diff != "" {
			t.Errorf("heartbeat (-want +got):\n%s", diff)
		}
		h.stop()
		if diff := cmp.Diff([]string{"home/boiler/availability offline"}, lines(h.pub.take())); diff != "" {
			t.Errorf("shutdown (-want +got):\n%s", diff)
		}
	})
}

func TestValuePayloadFormat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		drv := newFakeDriver()
		drv.values["b"], drv.values["u"] = true, uint64(18446744073709551615)
		h := start(t, drv, DeviceConfig{Name: "d", Driver: "fake", Topic: "v/{device}/{point}", Payload: "value",
			Points: []PointConfig{{Name: "b"}, {Name: "u"}}})
		h.stop()
		want := []string{"v/d/availability online", "v/d/b true", "v/d/u 18446744073709551615", "v/d/availability offline"}
		if diff := cmp.Diff(want, lines(h.pub.take())); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
}

// TestFailedReadsNeverLookFresh is G6: a failing device or point publishes no
// value, only availability and value-less quality:bad payloads; after
// recovery the first value is a new sample with its own time.
func TestFailedReadsNeverLookFresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		drv := newFakeDriver()
		drv.values["a"], drv.values["b"] = 1.0, 2.0
		h := start(t, drv, DeviceConfig{Name: "d", Driver: "fake", Topic: "g/{device}/{point}", Poll: 5 * time.Second, Heartbeat: 5 * time.Second,
			Points: []PointConfig{{Name: "a"}, {Name: "b"}}})
		h.pub.take()

		// One point fails: it is marked bad once, the other carries on.
		drv.set(func(d *fakeDriver) { d.pointErr["a"] = errors.New("exception 2") })
		advance(5 * time.Second)
		advance(5 * time.Second)
		want := []string{
			`g/d/a {"quality":"bad","ts":"` + h.at(5*time.Second) + `","error":"exception 2"}`,
			`g/d/b {"value":2,"ts":"` + h.at(5*time.Second) + `"}`,
			`g/d/b {"value":2,"ts":"` + h.at(10*time.Second) + `"}`,
		}
		if diff := cmp.Diff(want, lines(h.pub.take())); diff != "" {
			t.Errorf("point failure (-want +got):\n%s", diff)
		}

		// The whole device fails: offline once, nothing else, while it is
		// reopened with backoff (1s, 2s, 4s, ...).
		drv.set(func(d *fakeDriver) { d.pollErr = errors.New("timeout") })
		advance(5 * time.Second)
		var opens, closes int
		counts := func() { drv.set(func(d *fakeDriver) { opens, closes = d.opens, d.closes }) }
		counts()
		before := opens
		advance(time.Minute)
		counts()
		if diff := cmp.Diff([]string{"g/d/availability offline"}, lines(h.pub.take())); diff != "" {
			t.Errorf("device failure (-want +got):\n%s", diff)
		}
		if n := opens - before; n != 5 || closes != opens {
			t.Errorf("reopened %d times in a minute (opens %d closes %d), want 5 (backoff 1s,2s,4s,8s,16s,30s)", n, opens, closes)
		}
		if st := h.set.Stats(); st.Online != 0 || st.PollErrors == 0 || st.Devices[0].Online {
			t.Errorf("stats while offline: %+v", st)
		}

		// Back: online, and every point is published afresh at once even
		// though the values did not change.
		drv.set(func(d *fakeDriver) { d.pollErr = nil; delete(d.pointErr, "a") })
		advance(30 * time.Second)
		got := lines(h.pub.take())
		if len(got) < 3 || got[0] != "g/d/availability online" || !strings.HasPrefix(got[1], `g/d/a {"value":1,"ts":"`) || !strings.HasPrefix(got[2], `g/d/b {"value":2,"ts":"`) {
			t.Errorf("after recovery: %q", got)
		}
		if st := h.set.Stats(); st.Online != 1 || st.ReadErrors < 2 || st.Reconnects == 0 {
			t.Errorf("stats after recovery: %+v", st)
		}
		h.stop()
		// State changes are logged once each, not once per failed poll.
		for msg, want := range map[string]int{`msg="device offline"`: 1, `msg="device online"`: 2, `msg="point unreadable"`: 1} {
			if got := h.logs.count(msg); got != want {
				t.Errorf("%s logged %d times, want %d", msg, got, want)
			}
		}
	})
}

// TestPartialPollFailure: a point that fails alone in its poll slot is bad,
// the device stays online.
func TestPartialPollFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		drv := newFakeDriver()
		drv.values["a"] = 1.0
		drv.pointErr["b"] = errors.New("illegal address")
		h := start(t, drv, DeviceConfig{Name: "d", Driver: "fake", Topic: "g/{device}/{point}",
			Points: []PointConfig{{Name: "a", Poll: 3 * time.Second}, {Name: "b", Poll: 2 * time.Second}}})
		advance(2 * time.Second) // b alone, failing again
		h.stop()
		want := []string{
			"g/d/availability online",
			`g/d/a {"value":1,"ts":"` + h.at(0) + `"}`,
			`g/d/b {"quality":"bad","ts":"` + h.at(0) + `","error":"illegal address"}`,
			"g/d/availability offline",
		}
		if diff := cmp.Diff(want, lines(h.pub.take())); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
		if st := h.set.Stats(); st.ReadErrors != 2 || st.PollErrors != 0 || st.Polls != 2 {
			t.Errorf("stats %+v", st)
		}
	})
}

func TestOpenFailureGoesOfflineOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		drv := newFakeDriver()
		drv.openErr = errors.New("no such port")
		h := start(t, drv, DeviceConfig{Name: "d", Driver: "fake", Topic: "g/{device}/{point}", Points: []PointConfig{{Name: "a"}}})
		advance(2 * time.Minute)
		h.stop()
		want := []string{"g/d/availability offline", "g/d/availability offline"} // first failure, then shutdown
		if diff := cmp.Diff(want, lines(h.pub.take())); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
}

func TestStreamReconnect(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		drv := newFakeDriver()
		drv.stream = true
		drv.emit = make(chan []Reading)
		h := start(t, drv, DeviceConfig{Name: "w", Driver: "fake", Topic: "s/{device}/{point}", Points: []PointConfig{{Name: "t"}}})
		p := h.set.Devices()[0].Points[0]
		drv.emit <- []Reading{{Point: p, Value: 21.5, Time: h.t0}}
		synctest.Wait()
		close(drv.emit) // unplugged
		synctest.Wait()
		advance(3 * time.Second)
		ch := make(chan []Reading)
		drv.set(func(d *fakeDriver) { d.emit = ch })
		advance(4 * time.Second) // next reopen picks up the new channel
		ch <- []Reading{{Point: p, Value: 21.5, Time: h.t0.Add(7 * time.Second)}}
		synctest.Wait()
		h.stop()
		want := []string{
			"s/w/availability online",
			`s/w/t {"value":21.5,"ts":"` + h.at(0) + `"}`,
			"s/w/availability offline",
			"s/w/availability online",
			`s/w/t {"value":21.5,"ts":"` + h.at(7*time.Second) + `"}`,
			"s/w/availability offline",
		}
		if diff := cmp.Diff(want, lines(h.pub.take())); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
}

func TestWriteBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		drv := newFakeDriver()
		drv.values["sp"], drv.values["pump"], drv.values["ro"] = uint64(200), false, 1.0
		h := start(t, drv, DeviceConfig{Name: "boiler", Driver: "fake", Topic: "h/{device}/{point}", Poll: time.Minute, Points: []PointConfig{
			{Name: "sp", Type: "uint16", Scale: f64(0.1), Writable: true, Min: f64(5), Max: f64(80), Deadband: 100},
			{Name: "pump", Type: "bool", Writable: true},
			{Name: "ro"},
		}})
		if diff := cmp.Diff([]string{"h/boiler/+/set", "h/boiler/pump/set", "h/boiler/ro/set", "h/boiler/sp/set"}, h.sub.filters()); diff != "" {
			t.Errorf("subscriptions (-want +got):\n%s", diff)
		}
		h.pub.take()
		send := func(m Message) {
			t.Helper()
			if err := h.sub.deliver(m); err != nil {
				t.Fatal(err)
			}
			synctest.Wait()
		}
		send(Message{Topic: "h/boiler/sp/set", Payload: []byte("21.5"), ResponseTopic: "client/resp", CorrelationData: []byte{1, 2}})
		got := h.pub.take()
		want := []string{
			`h/boiler/sp {"value":21.5,"ts":"` + h.at(0) + `"}`, // confirmed value, deadband bypassed
			`h/boiler/sp/set/result {"ok":true,"value":21.5}`,
			`client/resp {"ok":true,"value":21.5}`,
		}
		if diff := cmp.Diff(want, lines(got)); diff != "" {
			t.Errorf("write (-want +got):\n%s", diff)
		}
		if len(got) == 3 && string(got[2].CorrelationData) != "\x01\x02" {
			t.Errorf("correlation data = %q", got[2].CorrelationData)
		}
		send(Message{Topic: "h/boiler/sp/set", Payload: []byte(`{"value": 81}`)})
		send(Message{Topic: "h/boiler/sp/set", Payload: []byte(`warm`)})
		send(Message{Topic: "h/boiler/pump/set", Payload: []byte(`{"value":true}`)})
		drv.set(func(d *fakeDriver) { d.writeErr = errors.New("exception 3") })
		send(Message{Topic: "h/boiler/pump/set", Payload: []byte(`off`)})
		send(Message{Topic: "h/boiler/ro/set", Payload: []byte(`2`)})
		send(Message{Topic: "h/boiler/setpoint/set", Payload: []byte(`2`)})
		want = []string{
			`h/boiler/sp/set/result {"ok":false,"error":"81 is above the maximum 80"}`,
			`h/boiler/sp/set/result {"ok":false,"error":"\"warm\" is not a number"}`,
			`h/boiler/pump {"value":true,"ts":"` + h.at(0) + `"}`,
			`h/boiler/pump/set/result {"ok":true,"value":true}`,
			`h/boiler/pump/set/result {"ok":false,"error":"write: exception 3"}`,
			`h/boiler/ro/set/result {"ok":false,"error":"point ro of device boiler is read-only (writable: true in its config allows writes)"}`,
			`h/boiler/setpoint/set/result {"ok":false,"error":"device boiler has no point \"setpoint\" (points: sp, pump, ro)"}`,
		}
		if diff := cmp.Diff(want, lines(h.pub.take())); diff != "" {
			t.Errorf("writes (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"sp=uint64(215)", "pump=bool(true)", "pump=bool(false)"}, drv.writes); diff != "" {
			t.Errorf("raw writes (-want +got):\n%s", diff)
		}
		st := h.set.Stats()
		if st.Writes != 7 || st.WriteErrors != 5 {
			t.Errorf("write stats: %+v", st)
		}
		// Offline: writes are answered at once.
		drv.set(func(d *fakeDriver) { d.pollErr = errors.New("gone") })
		advance(time.Minute)
		h.pub.take()
		send(Message{Topic: "h/boiler/pump/set", Payload: []byte(`on`)})
		if diff := cmp.Diff([]string{`h/boiler/pump/set/result {"ok":false,"error":"device is offline"}`}, lines(h.pub.take())); diff != "" {
			t.Errorf("offline write (-want +got):\n%s", diff)
		}
		h.stop()
		if len(h.sub.filters()) != 0 {
			t.Errorf("still subscribed after Run: %v", h.sub.filters())
		}
	})
}

func TestNewErrors(t *testing.T) {
	drv := newFakeDriver()
	cfg := DeviceConfig{Name: "d", Driver: "fake", Topic: "{gateway}/{device}/{point}", Points: []PointConfig{{Name: "a"}}}
	if _, err := New([]DeviceConfig{cfg}, Options{Drivers: map[string]Driver{"fake": drv}}); err == nil {
		t.Error("New without a Publisher succeeded")
	}
	if _, err := New([]DeviceConfig{cfg}, Options{Gateway: "", Drivers: map[string]Driver{"fake": drv}, Publisher: &fakePub{}}); err == nil {
		t.Error("New with an empty {gateway} level succeeded")
	}
	cfg.Name = ""
	if _, err := New([]DeviceConfig{cfg}, Options{Gateway: "g", Drivers: map[string]Driver{"fake": drv}, Publisher: &fakePub{}}); err == nil {
		t.Error("New accepted an invalid config")
	}
}

// Readings taken while the clock is not synchronised are marked uncertain;
// once it syncs they are good again.
func TestUnsyncedClockMarksReadings(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		drv := newFakeDriver()
		drv.values["t"] = 20.0
		var synced atomic.Bool
		pub := &fakePub{}
		set, err := New([]DeviceConfig{{Name: "d", Driver: "fake", Topic: "x/{device}/{point}", Poll: time.Second, Points: []PointConfig{{Name: "t"}}}},
			Options{Gateway: "gw", Drivers: map[string]Driver{"fake": drv}, Publisher: pub, ClockSynced: synced.Load})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- set.Run(ctx) }()
		synctest.Wait()
		t0 := time.Now()
		synced.Store(true)
		advance(time.Second)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		want := []string{
			"x/d/availability online",
			`x/d/t {"value":20,"ts":"` + formatTS(t0) + `","quality":"uncertain"}`,
			`x/d/t {"value":20,"ts":"` + formatTS(t0.Add(time.Second)) + `"}`,
			"x/d/availability offline",
		}
		if diff := cmp.Diff(want, lines(pub.take())); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
}

// A streaming sensor that goes silent while its port stays open is marked
// offline after three poll intervals, and online again with its next line.
func TestStreamSilence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		drv := newFakeDriver()
		drv.stream = true
		drv.emit = make(chan []Reading)
		h := start(t, drv, DeviceConfig{Name: "w", Driver: "fake", Topic: "s/{device}/{point}", Poll: 10 * time.Second, Points: []PointConfig{{Name: "t"}}})
		p := h.set.Devices()[0].Points[0]
		drv.emit <- []Reading{{Point: p, Value: 21.5, Time: h.t0}}
		synctest.Wait()
		advance(29 * time.Second)
		if got := lines(h.pub.take()); len(got) != 2 {
			t.Fatalf("before 3 polls of silence: %q", got)
		}
		advance(time.Second)
		if diff := cmp.Diff([]string{"s/w/availability offline"}, lines(h.pub.take())); diff != "" {
			t.Errorf("after 30s of silence (-want +got):\n%s", diff)
		}
		drv.emit <- []Reading{{Point: p, Value: 21.6, Time: h.t0.Add(45 * time.Second)}}
		synctest.Wait()
		h.stop()
		want := []string{"s/w/availability online", `s/w/t {"value":21.6,"ts":"` + h.at(45*time.Second) + `"}`, "s/w/availability offline"}
		if diff := cmp.Diff(want, lines(h.pub.take())); diff != "" {
			t.Errorf("after the next line (-want +got):\n%s", diff)
		}
	})
}

// A point's `heartbeat: 0` turns the device's heartbeat off for that point
// (issue 15: 0 used to mean "inherit"); a point without the key inherits.
func TestPointHeartbeatZeroOverridesDevice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		drv := newFakeDriver()
		drv.values["inherit"], drv.values["never"] = 1.0, 2.0
		h := start(t, drv, DeviceConfig{Name: "d", Driver: "fake", Topic: "h/{device}/{point}", Poll: time.Second, Heartbeat: 5 * time.Second,
			Points: []PointConfig{
				{Name: "inherit", Deadband: 1},
				{Name: "never", Deadband: 1, Heartbeat: new(time.Duration(0))},
			}})
		h.pub.take() // availability and the first readings
		advance(12 * time.Second)
		got := map[string]int{}
		for _, l := range lines(h.pub.take()) {
			got[strings.Fields(l)[0]]++
		}
		if diff := cmp.Diff(map[string]int{"h/d/inherit": 2}, got); diff != "" {
			t.Errorf("publishes of unchanged values in 12s, device heartbeat 5s (-want +got):\n%s", diff)
		}
		h.stop()
	})
}
