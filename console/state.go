package console

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Value is a point's last published value as the console saw it.
type Value struct {
	Value   any       `json:"value"`   // nil when the read failed
	Quality string    `json:"quality"` // good, uncertain or bad
	Time    time.Time `json:"ts"`      // sample time
	Error   string    `json:"error,omitempty"`
}

// Sample is one point of a history chart: Unix milliseconds and the value
// (booleans as 0 and 1).
type Sample struct {
	T int64   `json:"t"`
	V float64 `json:"v"`
}

// pointTable holds the latest value and a bounded history ring per point.
type pointTable struct {
	mu      sync.Mutex
	history int
	points  map[string]*pointState // by key(device, point)
}

type pointState struct {
	last  Value
	seen  bool
	ring  []Sample // capacity history; next is the write position once full
	next  int
	total uint64
}

func newPointTable(history int) *pointTable {
	return &pointTable{history: history, points: map[string]*pointState{}}
}

func key(device, point string) string { return device + "/" + point }

// observe records v and returns it.
func (t *pointTable) observe(k string, v Value) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.points[k]
	if st == nil {
		st = &pointState{}
		t.points[k] = st
	}
	st.last, st.seen = v, true
	f, ok := numeric(v.Value)
	if !ok {
		return
	}
	s := Sample{T: v.Time.UnixMilli(), V: f}
	if len(st.ring) < t.history {
		st.ring = append(st.ring, s)
	} else {
		st.ring[st.next] = s
		st.next = (st.next + 1) % t.history
	}
	st.total++
}

// latest returns the last value of k, if any.
func (t *pointTable) latest(k string) (Value, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.points[k]
	if st == nil || !st.seen {
		return Value{}, false
	}
	return st.last, true
}

// samples returns the history of k, oldest first.
func (t *pointTable) samples(k string) []Sample {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.points[k]
	if st == nil {
		return []Sample{}
	}
	out := make([]Sample, 0, len(st.ring))
	out = append(out, st.ring[st.next:]...)
	return append(out, st.ring[:st.next]...)
}

func numeric(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case bool:
		if x {
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

// parsePayload reads a fieldgate reading: the JSON form
// {"value":…,"unit":…,"ts":…,"quality":…} (or {"quality":"bad","error":…}),
// or a bare value (payload: value), sampled at now.
func parsePayload(payload []byte, now time.Time) Value {
	p := bytes.TrimSpace(payload)
	if len(p) > 0 && p[0] == '{' {
		var m struct {
			Value   any       `json:"value"`
			TS      time.Time `json:"ts"`
			Quality string    `json:"quality"`
			Error   string    `json:"error"`
		}
		if err := json.Unmarshal(p, &m); err == nil {
			v := Value{Value: m.Value, Quality: m.Quality, Time: m.TS, Error: m.Error}
			if v.Quality == "" {
				v.Quality = "good"
			}
			if v.Time.IsZero() {
				v.Time = now
			}
			return v
		}
	}
	v := Value{Quality: "good", Time: now}
	s := string(p)
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		v.Value = f
	} else if b, err := strconv.ParseBool(s); err == nil {
		v.Value = b
	} else {
		v.Value = strings.ToValidUTF8(s, "\uFFFD")
	}
	return v
}

// Observe records a reading published on a point's topic: the payload as
// the devices publish it. It never blocks for long: it is called on the
// broker's delivery path. Viewers get the newest value of each point; a
// slow viewer misses intermediate ones.
func (c *Console) Observe(device, point string, payload []byte) {
	v := parsePayload(payload, c.now())
	k := key(device, point)
	c.points.observe(k, v)
	c.hub.point(pointEvent{Device: device, Point: point, Value: v})
}

// pointEvent is one live update of a point, as sent to viewers.
type pointEvent struct {
	Device string `json:"device"`
	Point  string `json:"point"`
	Value
}

// hub fans live updates out to viewers, each through a bounded buffer.
type hub struct {
	mu      sync.Mutex
	max     int
	viewers map[*viewer]struct{}
}

// viewer is one open live-update stream. Its buffer keeps the newest event
// per point and at most maxPendingLog log lines, so a slow browser costs
// bounded memory and never blocks the publisher.
type viewer struct {
	wantPoints, wantLog bool

	mu         sync.Mutex
	points     map[string]pointEvent
	order      []string // keys of points in arrival order
	logs       []LogLine
	logDropped int
	wake       chan struct{} // capacity 1
}

const maxPendingLog = 200

func newHub(max int) *hub { return &hub{max: max, viewers: map[*viewer]struct{}{}} }

// join adds a viewer; false when there are too many.
func (h *hub) join(points, log bool) (*viewer, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.viewers) >= h.max {
		return nil, false
	}
	v := &viewer{wantPoints: points, wantLog: log, points: map[string]pointEvent{}, wake: make(chan struct{}, 1)}
	h.viewers[v] = struct{}{}
	return v, true
}

func (h *hub) leave(v *viewer) {
	h.mu.Lock()
	delete(h.viewers, v)
	h.mu.Unlock()
}

func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.viewers)
}

func (h *hub) point(ev pointEvent) {
	k := key(ev.Device, ev.Point)
	h.mu.Lock()
	defer h.mu.Unlock()
	for v := range h.viewers {
		if !v.wantPoints {
			continue
		}
		v.mu.Lock()
		if _, ok := v.points[k]; !ok {
			v.order = append(v.order, k)
		}
		v.points[k] = ev
		v.mu.Unlock()
		v.signal()
	}
}

func (h *hub) logLine(l LogLine) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for v := range h.viewers {
		if !v.wantLog {
			continue
		}
		v.mu.Lock()
		if len(v.logs) >= maxPendingLog {
			copy(v.logs, v.logs[1:])
			v.logs = v.logs[:len(v.logs)-1]
			v.logDropped++
		}
		v.logs = append(v.logs, l)
		v.mu.Unlock()
		v.signal()
	}
}

func (v *viewer) signal() {
	select {
	case v.wake <- struct{}{}:
	default:
	}
}

// take empties the viewer's buffer.
func (v *viewer) take() (points []pointEvent, logs []LogLine, dropped int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, k := range v.order {
		points = append(points, v.points[k])
	}
	clear(v.points)
	v.order = v.order[:0]
	logs, v.logs = v.logs, nil
	dropped, v.logDropped = v.logDropped, 0
	return points, logs, dropped
}
