package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// PointView is a point with its live value, as pages and API show it.
type PointView struct {
	Point
	Device string `json:"device"`
	Value  *Value `json:"last"` // nil until a value was seen
	// Stale is set when the value cannot be trusted as current: the device
	// is offline, the read failed, or it is older than StaleAfter.
	Stale         bool    `json:"stale"`
	StaleAfterSec float64 `json:"stale_after_seconds"` // 0: never by age
}

// DeviceView is a device with its points' live values.
type DeviceView struct {
	Device
	Points []PointView `json:"points"`
}

// PointDetail is a point's page: its value and recent history.
type PointDetail struct {
	PointView
	History []Sample `json:"history"`
}

// BrokerView is the Broker page.
type BrokerView struct {
	Clients       []Client `json:"clients"`
	Retained      int64    `json:"retained"`
	Subscriptions int64    `json:"subscriptions"`
	Inflight      int64    `json:"inflight"`
	Available     bool     `json:"available"`
}

// WriteRequest is the body of POST /api/v1/write (JSON) or the Write form.
type WriteRequest struct {
	Device string `json:"device"`
	Point  string `json:"point"`
	Value  string `json:"value"`
}

// WriteResult is the answer to a write.
type WriteResult struct {
	OK    bool   `json:"ok"`
	Value any    `json:"value,omitempty"` // the confirmed value, read back
	Error string `json:"error,omitempty"`
}

func (c *Console) status() (Status, bool) {
	if c.opts.Status == nil {
		return Status{}, false
	}
	return c.opts.Status.Status(), true
}

func (c *Console) devices() []DeviceView {
	if c.opts.Devices == nil {
		return nil
	}
	now := c.now()
	var out []DeviceView
	for _, d := range c.opts.Devices.Devices() {
		dv := DeviceView{Device: d}
		for _, p := range d.Points {
			dv.Points = append(dv.Points, c.pointView(d, p, now))
		}
		out = append(out, dv)
	}
	return out
}

func (c *Console) pointView(d Device, p Point, now time.Time) PointView {
	pv := PointView{Point: p, Device: d.Name, StaleAfterSec: p.StaleAfter.Seconds()}
	if v, ok := c.points.latest(key(d.Name, p.Name)); ok {
		pv.Value = &v
		pv.Stale = !d.Online || v.Quality == "bad" || p.StaleAfter > 0 && now.Sub(v.Time) > p.StaleAfter
	}
	return pv
}

// findPoint looks a point up by device and point name.
func (c *Console) findPoint(device, point string) (PointView, bool) {
	if c.opts.Devices == nil {
		return PointView{}, false
	}
	for _, d := range c.opts.Devices.Devices() {
		if d.Name != device {
			continue
		}
		for _, p := range d.Points {
			if p.Name == point {
				return c.pointView(d, p, c.now()), true
			}
		}
	}
	return PointView{}, false
}

func (c *Console) brokerView() BrokerView {
	var bv BrokerView
	if st, ok := c.status(); ok {
		bv.Retained, bv.Subscriptions, bv.Inflight = st.Broker.Retained, st.Broker.Subscriptions, st.Broker.Inflight
	}
	if c.opts.Clients != nil {
		bv.Available = true
		bv.Clients = c.opts.Clients.Clients()
	}
	if bv.Clients == nil {
		bv.Clients = []Client{}
	}
	return bv
}

func (c *Console) runningConfig() (RunningConfig, bool) {
	if c.opts.Config == nil {
		return RunningConfig{}, false
	}
	return c.opts.Config.RunningConfig(), true
}

func (c *Console) logLines(level slog.Level, limit int) []LogLine {
	if c.opts.Log == nil {
		return []LogLine{}
	}
	return c.opts.Log.Lines(level, limit)
}

// maxWriteValue bounds a written value's length.
const maxWriteValue = 256

// write performs a write for user through the Writer, logging it.
func (c *Console) write(ctx context.Context, user string, req WriteRequest) (WriteResult, int) {
	pv, ok := c.findPoint(req.Device, req.Point)
	switch {
	case !ok:
		return WriteResult{Error: fmt.Sprintf("no point %s/%s", req.Device, req.Point)}, http.StatusNotFound
	case !pv.Writable:
		return WriteResult{Error: fmt.Sprintf("point %s/%s is not writable", req.Device, req.Point)}, http.StatusBadRequest
	case strings.TrimSpace(req.Value) == "":
		return WriteResult{Error: "enter a value"}, http.StatusBadRequest
	case len(req.Value) > maxWriteValue:
		return WriteResult{Error: fmt.Sprintf("value longer than %d bytes", maxWriteValue)}, http.StatusBadRequest
	case c.opts.Writer == nil:
		return WriteResult{Error: "writes are not available"}, http.StatusServiceUnavailable
	}
	select {
	case c.writeSlots <- struct{}{}:
		defer func() { <-c.writeSlots }()
	default:
		return WriteResult{Error: "too many writes in progress; try again"}, http.StatusTooManyRequests
	}
	if user == "" {
		user = "(loopback)"
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := c.opts.Writer.Write(ctx, req.Device, req.Point, strings.TrimSpace(req.Value))
	if err != nil {
		c.log.Info("console write failed", "user", user, "device", req.Device, "point", req.Point, "value", req.Value, "error", err)
		code := http.StatusUnprocessableEntity
		if errors.Is(err, context.DeadlineExceeded) {
			code = http.StatusGatewayTimeout
		}
		return WriteResult{Error: err.Error()}, code
	}
	c.log.Info("console write", "user", user, "device", req.Device, "point", req.Point, "value", req.Value, "confirmed", v)
	return WriteResult{OK: true, Value: v}, http.StatusOK
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeJSONError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// parseLevel reads a level filter (debug, info, warn, error); default info.
func parseLevel(s string) slog.Level {
	var l slog.Level
	if s == "" || l.UnmarshalText([]byte(s)) != nil {
		return slog.LevelInfo
	}
	return l
}

func (c *Console) apiRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/session", c.guard(true, false, func(w http.ResponseWriter, r *http.Request, a access) {
		writeJSON(w, http.StatusOK, map[string]any{"user": a.user, "role": a.role, "csrf_token": a.s.csrf, "login_required": c.needLogin})
	}))
	mux.HandleFunc("GET /api/v1/overview", c.guard(false, false, func(w http.ResponseWriter, r *http.Request, a access) {
		st, ok := c.status()
		if !ok {
			writeJSONError(w, http.StatusServiceUnavailable, "status not available")
			return
		}
		writeJSON(w, http.StatusOK, st)
	}))
	mux.HandleFunc("GET /api/v1/devices", c.guard(false, false, func(w http.ResponseWriter, r *http.Request, a access) {
		ds := c.devices()
		if ds == nil {
			ds = []DeviceView{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"devices": ds})
	}))
	mux.HandleFunc("GET /api/v1/devices/{device}/points/{point}", c.guard(false, false, func(w http.ResponseWriter, r *http.Request, a access) {
		pv, ok := c.findPoint(r.PathValue("device"), r.PathValue("point"))
		if !ok {
			writeJSONError(w, http.StatusNotFound, "no such point")
			return
		}
		writeJSON(w, http.StatusOK, PointDetail{PointView: pv, History: c.points.samples(key(pv.Device, pv.Name))})
	}))
	mux.HandleFunc("POST /api/v1/write", c.guard(false, true, func(w http.ResponseWriter, r *http.Request, a access) {
		var req WriteRequest
		r.Body = http.MaxBytesReader(w, r.Body, 4096)
		if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
			if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
				writeJSONError(w, http.StatusBadRequest, "body: "+err.Error())
				return
			}
		} else {
			req = WriteRequest{Device: r.PostFormValue("device"), Point: r.PostFormValue("point"), Value: r.PostFormValue("value")}
		}
		res, code := c.write(r.Context(), a.user, req)
		writeJSON(w, code, res)
	}))
	mux.HandleFunc("GET /api/v1/broker", c.guard(false, false, func(w http.ResponseWriter, r *http.Request, a access) {
		writeJSON(w, http.StatusOK, c.brokerView())
	}))
	mux.HandleFunc("GET /api/v1/log", c.guard(false, false, func(w http.ResponseWriter, r *http.Request, a access) {
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		writeJSON(w, http.StatusOK, map[string]any{"lines": c.logLines(parseLevel(r.URL.Query().Get("level")), limit)})
	}))
	mux.HandleFunc("GET /api/v1/config", c.guard(false, false, func(w http.ResponseWriter, r *http.Request, a access) {
		rc, ok := c.runningConfig()
		if !ok {
			writeJSONError(w, http.StatusServiceUnavailable, "configuration not available")
			return
		}
		writeJSON(w, http.StatusOK, rc)
	}))
	mux.HandleFunc("GET /api/v1/events", c.guard(false, false, c.serveEvents))
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeJSONError(w, http.StatusNotFound, "no such API")
	})
}

// deviceSummary is the per-device part of the "devices" event.
type deviceSummary struct {
	Name          string    `json:"name"`
	Online        bool      `json:"online"`
	PollErrors    uint64    `json:"poll_errors"`
	ReadErrors    uint64    `json:"read_errors"`
	LastSample    time.Time `json:"last_sample,omitzero"`
	LastError     string    `json:"last_error,omitempty"`
	LastErrorTime time.Time `json:"last_error_time,omitzero"`
}

// serveEvents is the live-update stream (Server-Sent Events). Query
// stream=points and/or log selects what is sent; a "devices" event with
// each device's state is sent every 2 s when points are streamed. Updates
// pass through the viewer's bounded buffer: the newest value per point,
// at most 200 log lines (older ones are dropped and counted).
func (c *Console) serveEvents(w http.ResponseWriter, r *http.Request, a access) {
	fl, ok := w.(http.Flusher)
	if !ok {
		writeJSONError(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	streams := r.URL.Query().Get("stream")
	wantPoints := streams == "" || strings.Contains(streams, "points")
	wantLog := strings.Contains(streams, "log")
	v, ok := c.hub.join(wantPoints, wantLog)
	if !ok {
		writeJSONError(w, http.StatusServiceUnavailable, fmt.Sprintf("too many live viewers (%d)", maxViewers))
		return
	}
	defer c.hub.leave(v)
	// A stream lasts as long as the page is open: lift the server's write
	// timeout for this response (each event is small and flushed at once).
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(event string, data any) bool {
		b, err := json.Marshal(data)
		if err != nil {
			return true
		}
		_, err = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b)
		return err == nil
	}
	sendDevices := func() bool {
		if !wantPoints || c.opts.Devices == nil {
			return true
		}
		var ds []deviceSummary
		for _, d := range c.opts.Devices.Devices() {
			ds = append(ds, deviceSummary{Name: d.Name, Online: d.Online, PollErrors: d.PollErrors, ReadErrors: d.ReadErrors,
				LastSample: d.LastSample, LastError: d.LastError, LastErrorTime: d.LastErrorTime})
		}
		return send("devices", ds)
	}
	if _, err := fmt.Fprint(w, "retry: 2000\n\n"); err != nil || !sendDevices() {
		return
	}
	fl.Flush()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-c.stopping:
			return
		case <-tick.C:
			if !sendDevices() {
				return
			}
			fl.Flush()
		case <-v.wake:
			points, logs, dropped := v.take()
			for _, p := range points {
				if !send("point", p) {
					return
				}
			}
			if dropped > 0 && !send("log-dropped", dropped) {
				return
			}
			for _, l := range logs {
				if !send("log", l) {
					return
				}
			}
			fl.Flush()
		}
	}
}

// sortedDrops lists drop reasons in a stable order.
func sortedDrops(m map[string]uint64) []string {
	var ks []string
	for k, v := range m {
		if v > 0 {
			ks = append(ks, k)
		}
	}
	slices.Sort(ks)
	return ks
}
