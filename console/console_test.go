package console

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/bcrypt"
)

// fakeGateway answers the console's questions with fixed data and records
// writes.
type fakeGateway struct {
	mu     sync.Mutex
	online bool
	writes []string
}

func (f *fakeGateway) Status() Status {
	return Status{Gateway: "gw-test", Version: "v1.2.3", DevicesTotal: 1, DevicesOnline: 1, ClockSynced: true,
		Upstream: &UpstreamStatus{URL: "mqtt://up:1883", State: "backoff", LastError: "connection refused"},
		Backlog:  &BacklogStatus{Messages: 42, Bytes: 4200, MaxBytes: 1 << 20, DrainETASec: -1},
		Drops:    map[string]uint64{"buffer_quota": 3}}
}

func (f *fakeGateway) Devices() []Device {
	f.mu.Lock()
	defer f.mu.Unlock()
	lo, hi := 5.0, 80.0
	return []Device{{Name: "boiler", Driver: "modbus", Online: f.online, LastError: "timeout", Points: []Point{
		{Name: "temperature", Topic: "home/boiler/temperature", Unit: "°C", StaleAfter: 10 * time.Second},
		{Name: "setpoint", Topic: "home/boiler/setpoint", Writable: true, Min: &lo, Max: &hi},
	}}}
}

func (f *fakeGateway) Clients() []Client {
	return []Client{{ID: "sensor-1", Username: "s1", Remote: "10.0.0.5:5000", Protocol: "MQTT 5", Subscriptions: []string{"home/#"}, Inflight: 2, Queued: 1}}
}

func (f *fakeGateway) Write(ctx context.Context, device, point, value string) (any, error) {
	f.mu.Lock()
	f.writes = append(f.writes, device+"/"+point+"="+value)
	f.mu.Unlock()
	if value == "99" {
		return nil, errors.New("99 is above the maximum 80")
	}
	return 42.5, nil
}

func (f *fakeGateway) RunningConfig() RunningConfig {
	return RunningConfig{YAML: "gateway:\n  id: gw-test\n", LastReload: &ReloadResult{OK: false, Error: "devices[0].poll: bad"}}
}

type logSink struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logSink) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newTestConsole(t *testing.T, cfg Config, addr string) (*Console, *fakeGateway, *httptest.Server, *logSink) {
	t.Helper()
	sink := &logSink{}
	ring := NewLogRing(100)
	log := slog.New(ring.Handler(slog.NewTextHandler(sink, nil)))
	f := &fakeGateway{online: true}
	c, err := New(cfg, Options{Status: f, Devices: f, Clients: f, Writer: f, Config: f, Log: ring, Addr: addr, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c.Handler())
	t.Cleanup(srv.Close)
	t.Cleanup(c.Shutdown)
	return c, f, srv, sink
}

func client(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func getJSON(t *testing.T, c *http.Client, u string, v any) int {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil && resp.StatusCode == 200 {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
	}
	return resp.StatusCode
}

// session fetches the CSRF token (and the session cookie).
func csrfToken(t *testing.T, c *http.Client, base string) string {
	t.Helper()
	var s struct {
		CSRF string `json:"csrf_token"`
	}
	if code := getJSON(t, c, base+"/api/v1/session", &s); code != 200 || s.CSRF == "" {
		t.Fatalf("session: %d %+v", code, s)
	}
	return s.CSRF
}

func postWrite(t *testing.T, c *http.Client, base, csrf, body string) (int, WriteResult) {
	t.Helper()
	req, _ := http.NewRequest("POST", base+"/api/v1/write", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if csrf != "" {
		req.Header.Set("X-CSRF-Token", csrf)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r WriteResult
	_ = json.NewDecoder(resp.Body).Decode(&r)
	return resp.StatusCode, r
}

func TestAPI(t *testing.T) {
	con, f, srv, _ := newTestConsole(t, Config{}, "127.0.0.1:9180")
	base, c := srv.URL, client(t)
	now := time.Now().UTC().Truncate(time.Millisecond)
	ts := now.Format("2006-01-02T15:04:05.000Z")
	con.Observe("boiler", "temperature", []byte(`{"value":61.5,"unit":"°C","ts":"`+ts+`"}`))
	con.Observe("boiler", "temperature", []byte(`{"value":62,"unit":"°C","ts":"`+ts+`"}`))

	var st Status
	if code := getJSON(t, c, base+"/api/v1/overview", &st); code != 200 || st.Gateway != "gw-test" || st.Backlog.Messages != 42 || st.Upstream.LastError != "connection refused" {
		t.Errorf("overview: %d %+v", code, st)
	}

	var devs struct{ Devices []DeviceView }
	getJSON(t, c, base+"/api/v1/devices", &devs)
	if len(devs.Devices) != 1 || len(devs.Devices[0].Points) != 2 {
		t.Fatalf("devices: %+v", devs)
	}
	temp := devs.Devices[0].Points[0]
	if temp.Value == nil || temp.Value.Value != 62.0 || temp.Value.Quality != "good" || !temp.Value.Time.Equal(now) || temp.Stale {
		t.Errorf("temperature: %+v value %+v", temp, temp.Value)
	}
	if sp := devs.Devices[0].Points[1]; sp.Value != nil || !sp.Writable {
		t.Errorf("setpoint never published: %+v", sp)
	}

	var pd PointDetail
	getJSON(t, c, base+"/api/v1/devices/boiler/points/temperature", &pd)
	if diff := cmp.Diff([]Sample{{now.UnixMilli(), 61.5}, {now.UnixMilli(), 62}}, pd.History); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
	if code := getJSON(t, c, base+"/api/v1/devices/boiler/points/nope", nil); code != 404 {
		t.Errorf("unknown point: %d", code)
	}

	var bv BrokerView
	getJSON(t, c, base+"/api/v1/broker", &bv)
	if len(bv.Clients) != 1 || bv.Clients[0].ID != "sensor-1" || bv.Clients[0].Queued != 1 {
		t.Errorf("broker: %+v", bv)
	}
	var rc RunningConfig
	getJSON(t, c, base+"/api/v1/config", &rc)
	if rc.LastReload == nil || rc.LastReload.OK || !strings.Contains(rc.YAML, "gw-test") {
		t.Errorf("config: %+v", rc)
	}

	// Writes: CSRF required, validated, the device's answer returned.
	csrf := csrfToken(t, c, base)
	if code, _ := postWrite(t, c, base, "", `{"device":"boiler","point":"setpoint","value":"50"}`); code != 403 {
		t.Errorf("write without CSRF token: %d, want 403", code)
	}
	if code, r := postWrite(t, c, base, csrf, `{"device":"boiler","point":"setpoint","value":"50"}`); code != 200 || !r.OK || r.Value != 42.5 {
		t.Errorf("write: %d %+v", code, r)
	}
	if code, r := postWrite(t, c, base, csrf, `{"device":"boiler","point":"setpoint","value":"99"}`); code != 422 || r.OK || r.Error != "99 is above the maximum 80" {
		t.Errorf("refused write: %d %+v", code, r)
	}
	if code, r := postWrite(t, c, base, csrf, `{"device":"boiler","point":"temperature","value":"1"}`); code != 400 || !strings.Contains(r.Error, "not writable") {
		t.Errorf("write to a read-only point: %d %+v", code, r)
	}
	if code, _ := postWrite(t, c, base, csrf, `{"device":"boiler","point":"setpoint","value":""}`); code != 400 {
		t.Errorf("empty value: %d", code)
	}
	if diff := cmp.Diff([]string{"boiler/setpoint=50", "boiler/setpoint=99"}, f.writes); diff != "" {
		t.Errorf("writes reaching the gateway (-want +got):\n%s", diff)
	}

	var logs struct{ Lines []LogLine }
	getJSON(t, c, base+"/api/v1/log?level=warn", &logs)
	if len(logs.Lines) != 1 || !strings.Contains(logs.Lines[0].Msg, "CSRF") {
		t.Errorf("warn log lines: %+v", logs.Lines)
	}
	getJSON(t, c, base+"/api/v1/log?level=info", &logs)
	if len(logs.Lines) < 3 {
		t.Errorf("info log lines: %+v", logs.Lines)
	}

	// Every page renders.
	for _, p := range []string{"/", "/devices", "/devices/boiler/temperature", "/write", "/write?device=boiler&point=setpoint", "/broker", "/log?level=debug", "/config"} {
		resp, err := c.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), "gw-test") {
			t.Errorf("page %s: %d\n%s", p, resp.StatusCode, b)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
			t.Errorf("page %s: CSP %q", p, csp)
		}
	}
}

// The Write form works without JavaScript too: a plain form POST with the
// CSRF field.
func TestWriteFormPost(t *testing.T) {
	_, f, srv, _ := newTestConsole(t, Config{}, "127.0.0.1:9180")
	c := client(t)
	csrf := csrfToken(t, c, srv.URL)
	post := func(form url.Values) (int, string) {
		resp, err := c.PostForm(srv.URL+"/write", form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post(url.Values{"csrf": {csrf}, "target": {"boiler/setpoint"}, "value": {"50"}}); code != 200 || !strings.Contains(body, `<strong class="confirmed">42.5</strong>`) {
		t.Errorf("form write: %d\n%s", code, body)
	}
	if code, _ := post(url.Values{"target": {"boiler/setpoint"}, "value": {"51"}}); code != 403 {
		t.Errorf("form write without CSRF: %d, want 403", code)
	}
	if len(f.writes) != 1 {
		t.Errorf("writes: %v", f.writes)
	}
}

// Without login (loopback), a Host that is not loopback is refused: a web
// page cannot reach the console through DNS rebinding.
func TestLoopbackHostGuard(t *testing.T) {
	_, _, srv, _ := newTestConsole(t, Config{}, "127.0.0.1:9180")
	for host, want := range map[string]int{"evil.example.com": 403, "localhost:9180": 200, "127.0.0.1:9180": 200, "[::1]:9180": 200} {
		req, _ := http.NewRequest("GET", srv.URL+"/api/v1/overview", nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %s: %d, want %d", host, resp.StatusCode, want)
		}
	}
}

func hashOf(t *testing.T, pw string) string {
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

var csrfMeta = regexp.MustCompile(`name="csrf-token" content="([^"]+)"`)

// loginForm GETs /login and returns its CSRF token.
func loginForm(t *testing.T, c *http.Client, base string) string {
	t.Helper()
	resp, err := c.Get(base + "/login")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := csrfMeta.FindStringSubmatch(string(b))
	if m == nil {
		t.Fatalf("no CSRF token on the login page:\n%s", b)
	}
	return m[1]
}

func login(t *testing.T, c *http.Client, base, csrf, user, pw string) int {
	t.Helper()
	resp, err := c.PostForm(base+"/login", url.Values{"csrf": {csrf}, "username": {user}, "password": {pw}, "next": {"/devices"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestLogin(t *testing.T) {
	cfg := Config{Users: []User{
		{Username: "tech", PasswordHash: hashOf(t, "pw-tech"), Role: RoleWrite},
		{Username: "viewer", PasswordHash: hashOf(t, "pw-view"), Role: RoleRead},
	}}
	con, f, srv, logs := newTestConsole(t, cfg, "0.0.0.0:9180")
	if !con.NeedsLogin() {
		t.Fatal("a console on 0.0.0.0 must need a login")
	}
	base := srv.URL
	anon := client(t)
	for _, p := range []string{"/", "/devices", "/devices/boiler/setpoint", "/write", "/broker", "/log", "/config"} {
		resp, err := anon.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); resp.StatusCode != 303 || !strings.HasPrefix(loc, "/login?next=") {
			t.Errorf("page %s without login: %d → %q", p, resp.StatusCode, loc)
		}
	}
	for _, p := range []string{"/api/v1/overview", "/api/v1/devices", "/api/v1/broker", "/api/v1/log", "/api/v1/config", "/api/v1/events", "/api/v1/session"} {
		if code := getJSON(t, anon, base+p, nil); code != 401 {
			t.Errorf("%s without login: %d, want 401", p, code)
		}
	}
	if code, _ := postWrite(t, anon, base, "x", `{"device":"boiler","point":"setpoint","value":"50"}`); code != 401 {
		t.Errorf("write without login: %d, want 401", code)
	}
	// The login form itself needs its CSRF token.
	if code := login(t, anon, base, "", "tech", "pw-tech"); code != 403 {
		t.Errorf("login without CSRF token: %d, want 403", code)
	}

	// Read-only user: reads, may not write.
	viewer := client(t)
	if code := login(t, viewer, base, loginForm(t, viewer, base), "viewer", "pw-view"); code != 303 {
		t.Fatalf("viewer login: %d", code)
	}
	if code := getJSON(t, viewer, base+"/api/v1/devices", nil); code != 200 {
		t.Errorf("viewer reads devices: %d", code)
	}
	csrf := csrfToken(t, viewer, base)
	if code, _ := postWrite(t, viewer, base, csrf, `{"device":"boiler","point":"setpoint","value":"50"}`); code != 403 {
		t.Errorf("viewer writes: %d, want 403", code)
	}

	// Write user.
	tech := client(t)
	if code := login(t, tech, base, loginForm(t, tech, base), "tech", "pw-tech"); code != 303 {
		t.Fatalf("tech login: %d", code)
	}
	csrf = csrfToken(t, tech, base)
	if code, _ := postWrite(t, tech, base, "", `{"device":"boiler","point":"setpoint","value":"50"}`); code != 403 {
		t.Errorf("tech writes without CSRF: %d, want 403", code)
	}
	if code, _ := postWrite(t, tech, base, csrf, `{"device":"boiler","point":"setpoint","value":"50"}`); code != 200 {
		t.Errorf("tech writes: %d, want 200", code)
	}
	if len(f.writes) != 1 {
		t.Errorf("writes: %v", f.writes)
	}
	// Logging out ends the session.
	req, _ := http.NewRequest("POST", base+"/logout", strings.NewReader(url.Values{"csrf": {csrf}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if resp, err := tech.Do(req); err != nil || resp.StatusCode != 303 {
		t.Fatalf("logout: %v %v", resp, err)
	}
	if code := getJSON(t, tech, base+"/api/v1/devices", nil); code != 401 {
		t.Errorf("after logout: %d, want 401", code)
	}

	// Failed logins are logged and rate-limited per address.
	bad := client(t)
	tok := loginForm(t, bad, base)
	for i := range maxFailures {
		if code := login(t, bad, base, tok, "tech", fmt.Sprint("wrong", i)); code != 401 {
			t.Errorf("failure %d: %d, want 401", i, code)
		}
	}
	if code := login(t, bad, base, tok, "tech", "pw-tech"); code != 429 {
		t.Errorf("login after %d failures: %d, want 429 even with the right password", maxFailures, code)
	}
	if n := strings.Count(logs.String(), "console login failed"); n != maxFailures {
		t.Errorf("%d failed logins logged, want %d", n, maxFailures)
	}
	if !strings.Contains(logs.String(), "too many failures") {
		t.Errorf("the refused login was not logged")
	}
}

// The session cookie is HttpOnly and SameSite=Strict; the page shows no
// password hash.
func TestCookieAndNoSecrets(t *testing.T) {
	hash := hashOf(t, "pw")
	_, _, srv, _ := newTestConsole(t, Config{Users: []User{{Username: "tech", PasswordHash: hash, Role: RoleWrite}}}, "192.168.1.5:9180")
	resp, err := http.Get(srv.URL + "/login")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(b), hash) {
		t.Error("login page contains the hash")
	}
	cs := resp.Cookies()
	if len(cs) != 1 || !cs[0].HttpOnly || cs[0].SameSite != http.SameSiteStrictMode || !strings.HasPrefix(cs[0].Name, cookiePrefix+"_") {
		t.Errorf("cookies: %+v", cs)
	}
}

// Live updates: a viewer gets the newest value of each point; a viewer
// that does not read keeps one entry per point, however many readings
// arrive, and never blocks Observe.
func TestViewerBuffer(t *testing.T) {
	h := newHub(2)
	v, ok := h.join(true, true)
	if !ok {
		t.Fatal("join")
	}
	for i := range 10000 {
		h.point(pointEvent{Device: "d", Point: fmt.Sprint("p", i%3), Value: Value{Value: float64(i)}})
		h.logLine(LogLine{Msg: fmt.Sprint(i)})
	}
	points, logs, dropped := v.take()
	want := []pointEvent{{Device: "d", Point: "p0", Value: Value{Value: 9999.0}}, {Device: "d", Point: "p1", Value: Value{Value: 9997.0}}, {Device: "d", Point: "p2", Value: Value{Value: 9998.0}}}
	if diff := cmp.Diff(want, points); diff != "" {
		t.Errorf("points (-want +got):\n%s", diff)
	}
	if len(logs) != maxPendingLog || logs[len(logs)-1].Msg != "9999" || dropped != 10000-maxPendingLog {
		t.Errorf("logs: %d kept, last %q, %d dropped", len(logs), logs[len(logs)-1].Msg, dropped)
	}
	if _, ok := h.join(false, false); !ok {
		t.Error("second viewer refused")
	}
	if _, ok := h.join(false, false); ok {
		t.Error("third viewer accepted beyond the limit of 2")
	}
}

// The SSE stream delivers point updates and log lines.
func TestEventStream(t *testing.T) {
	con, _, srv, _ := newTestConsole(t, Config{}, "127.0.0.1:9180")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/api/v1/events?stream=points,log", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	next := func(event string) string {
		t.Helper()
		for sc.Scan() {
			if sc.Text() == "event: "+event && sc.Scan() {
				return strings.TrimPrefix(sc.Text(), "data: ")
			}
		}
		t.Fatalf("stream ended before a %s event: %v", event, sc.Err())
		return ""
	}
	if d := next("devices"); !strings.Contains(d, `"name":"boiler"`) {
		t.Errorf("devices event %s", d)
	}
	if con.hub.count() == 0 { // the handler joins before its first write
		t.Fatal("no viewer joined")
	}
	con.Observe("boiler", "temperature", []byte(`21.5`))
	var ev pointEvent
	if err := json.Unmarshal([]byte(next("point")), &ev); err != nil || ev.Point != "temperature" || ev.Value.Value != 21.5 {
		t.Errorf("point event %+v %v", ev, err)
	}
	con.log.Warn("something happened", "k", "v")
	var l LogLine
	if err := json.Unmarshal([]byte(next("log")), &l); err != nil || l.Msg != "something happened" || l.Attrs != "component=console k=v" {
		t.Errorf("log event %+v %v", l, err)
	}
	con.Shutdown() // ends the stream
	for sc.Scan() {
	}
}

func TestParsePayload(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want Value
	}{
		{`{"value":21.5,"unit":"°C","ts":"2026-01-02T03:04:00.000Z"}`, Value{Value: 21.5, Quality: "good", Time: now.Add(-5 * time.Second)}},
		{`{"value":true,"ts":"2026-01-02T03:04:00.000Z","quality":"uncertain"}`, Value{Value: true, Quality: "uncertain", Time: now.Add(-5 * time.Second)}},
		{`{"quality":"bad","ts":"2026-01-02T03:04:00.000Z","error":"timeout"}`, Value{Quality: "bad", Time: now.Add(-5 * time.Second), Error: "timeout"}},
		{`42`, Value{Value: 42.0, Quality: "good", Time: now}},
		{`false`, Value{Value: false, Quality: "good", Time: now}},
		{`ON`, Value{Value: "ON", Quality: "good", Time: now}},
		{"\xff", Value{Value: "\uFFFD", Quality: "good", Time: now}},
	} {
		if diff := cmp.Diff(tc.want, parsePayload([]byte(tc.in), now)); diff != "" {
			t.Errorf("%q (-want +got):\n%s", tc.in, diff)
		}
	}
}

func TestHistoryRingBounded(t *testing.T) {
	pt := newPointTable(3)
	for i := range 10 {
		pt.observe("d/p", Value{Value: float64(i), Time: time.UnixMilli(int64(i))})
	}
	pt.observe("d/p", Value{Value: "text is not charted", Time: time.UnixMilli(99)})
	want := []Sample{{7, 7}, {8, 8}, {9, 9}}
	if diff := cmp.Diff(want, pt.samples("d/p")); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if v, _ := pt.latest("d/p"); v.Value != "text is not charted" {
		t.Errorf("latest %+v", v)
	}
}

func TestLogRing(t *testing.T) {
	r := NewLogRing(3)
	log := slog.New(r.Handler(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo})))
	log.Debug("not recorded: below the handler's level")
	log.With("component", "x").WithGroup("g").Info("one", "a", 1, slog.Group("h", "b", "two words"))
	log.Warn("two")
	log.Error("three")
	log.Info("four")
	var got []string
	for _, l := range r.Lines(slog.LevelDebug, 0) {
		got = append(got, l.Level+" "+l.Msg+" "+l.Attrs)
	}
	want := []string{"WARN two ", "ERROR three ", "INFO four "}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if ls := r.Lines(slog.LevelWarn, 1); len(ls) != 1 || ls[0].Msg != "three" {
		t.Errorf("warn, limit 1: %+v", ls)
	}
	r2 := NewLogRing(5)
	slog.New(r2.Handler(slog.NewTextHandler(io.Discard, nil))).With("component", "x").WithGroup("g").Info("one", "a", 1, slog.Group("h", "b", "two words"))
	if l := r2.Lines(slog.LevelInfo, 0); len(l) != 1 || l[0].Attrs != `component=x g.a=1 g.h.b="two words"` {
		t.Errorf("attrs: %+v", l)
	}
}

func TestConfigValidate(t *testing.T) {
	cfg := Config{History: 1, SessionTTL: time.Second, TLS: &TLSConfig{CertFile: "c"},
		Users: []User{{Username: "a", PasswordHash: "plain", Role: "admin"}, {Username: "a", PasswordHash: hashOf(t, "x")}}}
	cfg.Defaults()
	err := cfg.Validate()
	var paths []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		paths = append(paths, e.(*FieldError).Path)
	}
	want := []string{"tls", "tls", "history", "session_ttl", "users[0].password_hash", "users[0].role", "users[1].username"}
	if diff := cmp.Diff(want, paths); diff != "" {
		t.Errorf("problems (-want +got):\n%s\n%v", diff, err)
	}
	var ok Config
	ok.Defaults()
	if err := ok.Validate(); err != nil || !*ok.Enabled || ok.History != 120 {
		t.Errorf("defaults: %v %+v", err, ok)
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:9180": true, "localhost:80": true, "[::1]:9180": true, "127.1.2.3:1": true,
		"0.0.0.0:9180": false, ":9180": false, "192.168.1.5:9180": false, "[::]:9180": false, "example.com:80": false,
	} {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v", addr, got)
		}
	}
}

// Nothing in the embedded assets is fetched from elsewhere: no CDN, no web
// fonts.
func TestAssetsSelfContained(t *testing.T) {
	ext := regexp.MustCompile(`(?i:(https?:)?//[a-z0-9.-]+\.[a-z]{2,})|@import|url\(`)
	err := fs.WalkDir(assets, "assets", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := assets.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range ext.FindAllString(string(b), -1) {
			if strings.HasSuffix(m, "//www.w3.org") { // the SVG namespace, never fetched
				continue
			}
			t.Errorf("%s refers to %q", path, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Assets carry an ETag, so a browser revalidates them with a 304.
func TestStaticETag(t *testing.T) {
	_, _, srv, _ := newTestConsole(t, Config{}, "127.0.0.1:9180")
	resp, err := http.Get(srv.URL + "/static/app.js")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	tag := resp.Header.Get("ETag")
	if resp.StatusCode != 200 || tag == "" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/javascript") {
		t.Fatalf("app.js: %d etag %q type %q", resp.StatusCode, tag, resp.Header.Get("Content-Type"))
	}
	req, _ := http.NewRequest("GET", srv.URL+"/static/app.js", nil)
	req.Header.Set("If-None-Match", tag)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotModified {
		t.Errorf("revalidation: %d, want 304", resp.StatusCode)
	}
}

// A value is stale when it is older than StaleAfter, its read failed, or
// its device is offline.
func TestStale(t *testing.T) {
	con, f, srv, _ := newTestConsole(t, Config{}, "127.0.0.1:9180")
	c := client(t)
	stale := func() bool {
		var pd PointDetail
		getJSON(t, c, srv.URL+"/api/v1/devices/boiler/points/temperature", &pd)
		return pd.Stale
	}
	ts := func(age time.Duration) string {
		return time.Now().Add(-age).UTC().Format("2006-01-02T15:04:05.000Z")
	}
	con.Observe("boiler", "temperature", []byte(`{"value":1,"ts":"`+ts(time.Second)+`"}`))
	if stale() {
		t.Error("a fresh value is stale")
	}
	con.Observe("boiler", "temperature", []byte(`{"value":1,"ts":"`+ts(time.Minute)+`"}`))
	if !stale() {
		t.Error("a value older than StaleAfter is not stale")
	}
	con.Observe("boiler", "temperature", []byte(`{"quality":"bad","ts":"`+ts(0)+`","error":"timeout"}`))
	if !stale() {
		t.Error("a failed read is not stale")
	}
	con.Observe("boiler", "temperature", []byte(`{"value":1,"ts":"`+ts(0)+`"}`))
	f.mu.Lock()
	f.online = false
	f.mu.Unlock()
	if !stale() {
		t.Error("a value of an offline device is not stale")
	}
}

// The live stream outlasts the server's WriteTimeout (the ops server has
// one).
func TestEventStreamOutlivesWriteTimeout(t *testing.T) {
	sink := &logSink{}
	f := &fakeGateway{online: true}
	con, err := New(Config{}, Options{Devices: f, Addr: "127.0.0.1:9180", Logger: slog.New(slog.NewTextHandler(sink, nil))})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(con.Handler())
	srv.Config.WriteTimeout = 300 * time.Millisecond
	srv.Start()
	defer srv.Close()
	defer con.Shutdown()
	resp, err := http.Get(srv.URL + "/api/v1/events?stream=points")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	time.Sleep(time.Second) // past the write timeout: the condition under test is elapsed time
	con.Observe("boiler", "temperature", []byte(`7`))
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if sc.Text() == "event: point" {
			return
		}
	}
	t.Fatalf("stream ended before the point event: %v", sc.Err())
}
