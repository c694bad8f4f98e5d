package console

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

//go:embed assets
var assets embed.FS

type pages struct {
	t      map[string]*template.Template
	static http.Handler
}

var pageNames = []string{"overview", "devices", "point", "write", "broker", "log", "config", "login"}

func loadPages() (*pages, error) {
	funcs := template.FuncMap{
		"bytes":    fmtBytes,
		"dur":      fmtSeconds,
		"ago":      fmtAgo,
		"value":    fmtValue,
		"num":      fmtNum,
		"stamp":    func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
		"drops":    sortedDrops,
		"unixms":   func(t time.Time) int64 { return t.UnixMilli() },
		"pct":      func(a, b uint64) float64 { return math.Round(float64(a) / float64(max(b, 1)) * 100) },
		"pathesc":  pathEscape,
		"levelsel": func(a, b string) bool { return strings.EqualFold(a, b) },
	}
	p := &pages{t: map[string]*template.Template{}}
	for _, name := range pageNames {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "assets/layout.html", "assets/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", name, err)
		}
		p.t[name] = t
	}
	sub, err := fs.Sub(assets, "assets/static")
	if err != nil {
		return nil, fmt.Errorf("console: assets: %w", err)
	}
	// Embedded files have no modification time: an ETag of their content
	// lets browsers revalidate (304) instead of fetching them again.
	etags := map[string]string{}
	err = fs.WalkDir(sub, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(sub, path)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		etags["/"+path] = `"` + hex.EncodeToString(sum[:8]) + `"`
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("console: assets: %w", err)
	}
	files := http.FileServerFS(sub)
	p.static = http.StripPrefix("/static", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tag, ok := etags[r.URL.Path]; ok {
			w.Header().Set("ETag", tag)
			w.Header().Set("Cache-Control", "no-cache")
		}
		files.ServeHTTP(w, r)
	}))
	return p, nil
}

// pageData is what every template gets.
type pageData struct {
	Title     string
	Active    string
	Gateway   string
	User      string
	Role      string
	CSRF      string
	NeedLogin bool
	Now       time.Time
	Data      any
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, code int, name, title string, a access, data any) {
	pd := pageData{Title: title, Active: name, User: a.user, Role: a.role, NeedLogin: c.needLogin, Now: c.now(), Data: data}
	if a.s != nil {
		pd.CSRF = a.s.csrf
	}
	if st, ok := c.status(); ok {
		pd.Gateway = st.Gateway
	}
	var buf bytes.Buffer
	tmpl := "layout.html"
	if r.URL.Query().Get("partial") == "1" {
		tmpl = "main"
	}
	if err := c.pages.t[name].ExecuteTemplate(&buf, tmpl, pd); err != nil {
		c.log.Error("console page failed", "page", name, "error", err)
		http.Error(w, "page failed", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

// Handler returns the console's routes: the pages at /, /devices, /write,
// /broker, /log, /config and /login, the JSON API under /api/v1/ and the
// embedded assets under /static/.
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	c.apiRoutes(mux)
	mux.Handle("GET /static/", c.pages.static)
	mux.HandleFunc("GET /login", c.loginPage)
	mux.HandleFunc("POST /login", c.login)
	mux.HandleFunc("POST /logout", c.guard(true, false, func(w http.ResponseWriter, r *http.Request, a access) {
		c.sessions.delete(a.s.id)
		http.SetCookie(w, &http.Cookie{Name: cookieName(r), Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
		http.Redirect(w, r, "/login", http.StatusSeeOther)
	}))
	mux.HandleFunc("GET /{$}", c.guard(true, false, func(w http.ResponseWriter, r *http.Request, a access) {
		st, ok := c.status()
		c.render(w, r, http.StatusOK, "overview", "Overview", a, overviewData{Status: st, OK: ok, Problems: problems(st, ok)})
	}))
	mux.HandleFunc("GET /devices", c.guard(true, false, func(w http.ResponseWriter, r *http.Request, a access) {
		c.render(w, r, http.StatusOK, "devices", "Devices", a, c.devices())
	}))
	mux.HandleFunc("GET /devices/{device}/{point}", c.guard(true, false, func(w http.ResponseWriter, r *http.Request, a access) {
		pv, ok := c.findPoint(r.PathValue("device"), r.PathValue("point"))
		if !ok {
			http.NotFound(w, r)
			return
		}
		c.render(w, r, http.StatusOK, "point", pv.Device+" / "+pv.Name, a, PointDetail{PointView: pv, History: c.points.samples(key(pv.Device, pv.Name))})
	}))
	mux.HandleFunc("GET /write", c.guard(true, false, func(w http.ResponseWriter, r *http.Request, a access) {
		c.render(w, r, http.StatusOK, "write", "Write", a, c.writeData(nil, WriteRequest{Device: r.URL.Query().Get("device"), Point: r.URL.Query().Get("point")}))
	}))
	mux.HandleFunc("POST /write", c.guard(true, true, func(w http.ResponseWriter, r *http.Request, a access) {
		req := WriteRequest{Device: r.PostFormValue("device"), Point: r.PostFormValue("point"), Value: r.PostFormValue("value")}
		if d, p, ok := strings.Cut(r.PostFormValue("target"), "/"); ok {
			req.Device, req.Point = d, p
		}
		res, code := c.write(r.Context(), a.user, req)
		c.render(w, r, code, "write", "Write", a, c.writeData(&res, req))
	}))
	mux.HandleFunc("GET /broker", c.guard(true, false, func(w http.ResponseWriter, r *http.Request, a access) {
		c.render(w, r, http.StatusOK, "broker", "Broker", a, c.brokerView())
	}))
	mux.HandleFunc("GET /log", c.guard(true, false, func(w http.ResponseWriter, r *http.Request, a access) {
		lv := parseLevel(r.URL.Query().Get("level"))
		c.render(w, r, http.StatusOK, "log", "Log", a, logData{Level: strings.ToLower(lv.String()), Lines: c.logLines(lv, 500)})
	}))
	mux.HandleFunc("GET /config", c.guard(true, false, func(w http.ResponseWriter, r *http.Request, a access) {
		rc, ok := c.runningConfig()
		c.render(w, r, http.StatusOK, "config", "Config", a, configData{RunningConfig: rc, OK: ok})
	}))
	mux.HandleFunc("/", c.guard(true, false, func(w http.ResponseWriter, r *http.Request, a access) {
		http.NotFound(w, r)
	}))
	return mux
}

type overviewData struct {
	Status
	OK       bool
	Problems []string
}

type logData struct {
	Level string
	Lines []LogLine
}

type configData struct {
	RunningConfig
	OK bool
}

type writeData struct {
	Points   []PointView
	Selected string // device/point
	Value    string
	Result   *WriteResult
	Request  WriteRequest
}

func (c *Console) writeData(res *WriteResult, req WriteRequest) writeData {
	wd := writeData{Result: res, Request: req, Value: req.Value}
	if req.Device != "" {
		wd.Selected = req.Device + "/" + req.Point
	}
	for _, d := range c.devices() {
		for _, p := range d.Points {
			if p.Writable {
				wd.Points = append(wd.Points, p)
			}
		}
	}
	return wd
}

// problems lists what an integrator should look at first.
func problems(st Status, ok bool) []string {
	if !ok {
		return []string{"gateway status not available"}
	}
	var ps []string
	if off := st.DevicesTotal - st.DevicesOnline; off > 0 {
		ps = append(ps, fmt.Sprintf("%d of %d devices offline", off, st.DevicesTotal))
	}
	if u := st.Upstream; u != nil && !u.Connected {
		msg := "upstream not connected (" + u.State + ")"
		if u.LastError != "" {
			msg += ": " + u.LastError
		}
		ps = append(ps, msg)
	}
	if !st.ClockSynced {
		ps = append(ps, "system clock not synchronised: readings are marked uncertain")
	}
	if b := st.Backlog; b != nil && b.MaxBytes > 0 && b.Bytes*10 > b.MaxBytes*8 {
		ps = append(ps, fmt.Sprintf("buffer %d%% full", b.Bytes*100/b.MaxBytes))
	}
	return ps
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	if !c.needLogin {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	s := c.sessionOf(r)
	if s == nil {
		s = c.sessions.create("", "", c.now())
		c.setCookie(w, r, s)
	}
	c.render(w, r, http.StatusOK, "login", "Log in", access{s: s}, loginData{Next: safeNext(r.URL.Query().Get("next")), NoUsers: len(c.users) == 0})
}

type loginData struct {
	Next    string
	Error   string
	NoUsers bool
}

// safeNext keeps a post-login redirect on this site.
func safeNext(s string) string {
	if !strings.HasPrefix(s, "/") || strings.HasPrefix(s, "//") || strings.HasPrefix(s, "/\\") {
		return "/"
	}
	return s
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if !c.needLogin {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	s := c.sessionOf(r)
	if !csrfOK(r, s) {
		c.log.Warn("console login refused: missing or wrong CSRF token", "remote", r.RemoteAddr)
		writeJSONError(w, http.StatusForbidden, "missing or invalid CSRF token; reload the login page")
		return
	}
	ip, now := clientIP(r), c.now()
	user, next := r.PostFormValue("username"), safeNext(r.PostFormValue("next"))
	fail := func(code int, msg string) {
		c.render(w, r, code, "login", "Log in", access{s: s}, loginData{Next: next, Error: msg, NoUsers: len(c.users) == 0})
	}
	if blocked, until := c.limiter.blocked(ip, now); blocked {
		c.log.Warn("console login refused: too many failures", "user", user, "remote", ip, "until", until.UTC().Format(time.RFC3339))
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(until.Sub(now).Seconds()))))
		fail(http.StatusTooManyRequests, "Too many failed logins from this address. Try again in a few minutes.")
		return
	}
	role, ok := c.authenticate(user, r.PostFormValue("password"))
	if !ok {
		n := c.limiter.failed(ip, now)
		c.log.Warn("console login failed", "user", user, "remote", ip, "recent_failures", n)
		fail(http.StatusUnauthorized, "Wrong username or password.")
		return
	}
	c.limiter.succeeded(ip)
	c.sessions.delete(s.id) // a new id after login: no session fixation
	ns := c.sessions.create(user, role, now)
	c.setCookie(w, r, ns)
	c.log.Info("console login", "user", user, "role", role, "remote", ip)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// Run serves the console on ln (over TLS when configured) until ctx is
// done, then shuts down. The caller opened ln; Run closes it.
func (c *Console) Run(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: c.Handler(), ReadHeaderTimeout: 5 * time.Second}
	srv.RegisterOnShutdown(c.Shutdown)
	if t := c.cfg.TLS; t != nil {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			ln.Close()
			return fmt.Errorf("console tls: %w", err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// CheckTLS loads the configured certificate and key, so that a bad file
// is reported at start-up; nil without TLS.
func (c *Console) CheckTLS() error {
	if t := c.cfg.TLS; t != nil {
		if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
			return fmt.Errorf("console tls: %w", err)
		}
	}
	return nil
}

func pathEscape(s string) string {
	return strings.ReplaceAll(template.URLQueryEscaper(s), "+", "%20")
}

func fmtBytes(v any) string {
	var f float64
	switch x := v.(type) {
	case uint64:
		f = float64(x)
	case int64:
		f = float64(x)
	case int:
		f = float64(x)
	}
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f B", f)
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}

// fmtSeconds writes a duration in seconds the short way: 45s, 3m 20s,
// 2h 5m, 3d 4h; "–" when negative (unknown).
func fmtSeconds(s float64) string {
	if s < 0 || math.IsNaN(s) || math.IsInf(s, 0) {
		return "–"
	}
	d := time.Duration(s * float64(time.Second))
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%.0fs", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%dm %02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh %02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd %dh", int(d.Hours())/24, int(d.Hours())%24)
}

func fmtAgo(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return fmtSeconds(now.Sub(t).Seconds()) + " ago"
}

func fmtNum(v any) string {
	switch x := v.(type) {
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case *float64:
		if x == nil {
			return ""
		}
		return strconv.FormatFloat(*x, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}

// fmtValue shows a point's value: numbers as published, booleans as
// on/off-style true/false, strings as they are.
func fmtValue(v *Value) string {
	if v == nil {
		return "–"
	}
	if v.Value == nil {
		return "no value"
	}
	switch x := v.Value.(type) {
	case float64:
		return strconv.FormatFloat(x, 'g', 10, 64)
	case bool:
		return strconv.FormatBool(x)
	case string:
		return x
	}
	return fmt.Sprint(v.Value)
}
