package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// cookiePrefix starts the session cookie's name; the port the browser used
// ends it, so that consoles of several gateways reached on one host (SSH
// tunnels to localhost:9180, :9181…) do not overwrite each other's cookie
// (cookies ignore ports). The cookie is HttpOnly and SameSite=Strict,
// Secure over TLS; the session itself (user, role, CSRF token) stays on
// the server.
const cookiePrefix = "fieldgate_console"

func cookieName(r *http.Request) string {
	if _, port, err := net.SplitHostPort(r.Host); err == nil && port != "" {
		return cookiePrefix + "_" + port
	}
	return cookiePrefix
}

// maxSessions bounds the session table; the oldest session is evicted.
const maxSessions = 256

// dummyHash is compared against for unknown users, so that a failed login
// takes as long whether or not the user exists.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("not a password"), bcrypt.DefaultCost)

type session struct {
	id      string
	user    string // "" before login
	role    string // RoleRead, RoleWrite, or "" before login
	csrf    string
	expires time.Time
	created time.Time
}

type sessions struct {
	mu  sync.Mutex
	ttl time.Duration
	m   map[string]*session
}

func newSessions(ttl time.Duration) *sessions {
	return &sessions{ttl: ttl, m: map[string]*session{}}
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go ≥ 1.24)
	return base64.RawURLEncoding.EncodeToString(b)
}

// create stores a new session for user (with role) and returns it.
func (s *sessions) create(user, role string, now time.Time) *session {
	ss := &session{id: randomToken(), user: user, role: role, csrf: randomToken(), created: now, expires: now.Add(s.ttl)}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, o := range s.m {
		if now.After(o.expires) {
			delete(s.m, id)
		}
	}
	if len(s.m) >= maxSessions {
		var oldest *session
		for _, o := range s.m {
			if oldest == nil || o.created.Before(oldest.created) {
				oldest = o
			}
		}
		delete(s.m, oldest.id)
	}
	s.m[ss.id] = ss
	return ss
}

func (s *sessions) get(id string, now time.Time) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.m[id]
	if ss == nil {
		return nil
	}
	if now.After(ss.expires) {
		delete(s.m, id)
		return nil
	}
	return ss
}

func (s *sessions) delete(id string) {
	s.mu.Lock()
	delete(s.m, id)
	s.mu.Unlock()
}

// loginLimiter refuses logins from an address after maxFailures failed
// attempts within failureWindow, until the window has passed.
type loginLimiter struct {
	mu   sync.Mutex
	fail map[string][]time.Time // by client IP
}

const (
	maxFailures   = 5
	failureWindow = 5 * time.Minute
	maxTracked    = 1024 // addresses tracked at once
)

func newLoginLimiter() *loginLimiter { return &loginLimiter{fail: map[string][]time.Time{}} }

func (l *loginLimiter) recent(ip string, now time.Time) []time.Time {
	ts := l.fail[ip]
	i := 0
	for i < len(ts) && now.Sub(ts[i]) > failureWindow {
		i++
	}
	ts = ts[i:]
	if len(ts) == 0 {
		delete(l.fail, ip)
	} else {
		l.fail[ip] = ts
	}
	return ts
}

// blocked reports whether ip may not try now, and until when.
func (l *loginLimiter) blocked(ip string, now time.Time) (bool, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ts := l.recent(ip, now)
	if len(ts) < maxFailures {
		return false, time.Time{}
	}
	return true, ts[len(ts)-maxFailures].Add(failureWindow)
}

// failed records a failure and returns how many are recent.
func (l *loginLimiter) failed(ip string, now time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	ts := l.recent(ip, now)
	if len(ts) == 0 && len(l.fail) >= maxTracked {
		for k := range l.fail { // forget one address to stay bounded
			delete(l.fail, k)
			break
		}
	}
	ts = append(ts, now)
	if len(ts) > maxFailures {
		ts = ts[len(ts)-maxFailures:]
	}
	l.fail[ip] = ts
	return len(ts)
}

func (l *loginLimiter) succeeded(ip string) {
	l.mu.Lock()
	delete(l.fail, ip)
	l.mu.Unlock()
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// authenticate checks a username and password; the role on success.
func (c *Console) authenticate(user, pass string) (string, bool) {
	u, ok := c.users[user]
	hash := c.dummyHash
	if ok {
		hash = []byte(u.PasswordHash)
	}
	err := bcrypt.CompareHashAndPassword(hash, []byte(pass))
	if !ok || err != nil {
		return "", false
	}
	return u.Role, true
}

// sessionOf returns the request's session, if its cookie names a live one.
func (c *Console) sessionOf(r *http.Request) *session {
	ck, err := r.Cookie(cookieName(r))
	if err != nil {
		return nil
	}
	return c.sessions.get(ck.Value, c.now())
}

func (c *Console) setCookie(w http.ResponseWriter, r *http.Request, s *session) {
	http.SetCookie(w, &http.Cookie{
		Name:     cookieName(r),
		Value:    s.id,
		Path:     "/",
		HttpOnly: true,
		Secure:   r.TLS != nil,
		SameSite: http.SameSiteStrictMode,
		Expires:  s.expires,
	})
}

// hostAllowed guards a console without login against DNS rebinding: a web
// page elsewhere must not reach it through a name it resolves to 127.0.0.1,
// so the Host header must be a loopback address or localhost.
func hostAllowed(r *http.Request) bool {
	return IsLoopback(r.Host)
}

// csrfOK checks the request's CSRF token (header X-CSRF-Token or form field
// csrf) against the session's.
func csrfOK(r *http.Request, s *session) bool {
	if s == nil {
		return false
	}
	tok := r.Header.Get("X-CSRF-Token")
	if tok == "" {
		tok = r.PostFormValue("csrf")
	}
	return tok != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(s.csrf)) == 1
}

// access is what the guard decided about a request.
type access struct {
	s    *session // nil only for API reads without login on loopback
	user string
	role string
}

// guard wraps h with the console's access rules:
//   - without login (loopback): the Host must be loopback; pages get an
//     anonymous session (for its CSRF token) with the write role.
//   - with login: a logged-in session is required; pages redirect to
//     /login, the API answers 401.
//   - every non-GET request needs the session's CSRF token (403 without).
//   - write requests need the write role (403).
func (c *Console) guard(page, write bool, h func(http.ResponseWriter, *http.Request, access)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		s := c.sessionOf(r)
		var a access
		if c.needLogin {
			if s == nil || s.user == "" {
				if page && r.Method == http.MethodGet && !strings.HasPrefix(r.URL.Path, "/api/") {
					http.Redirect(w, r, "/login?next="+urlQueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
					return
				}
				writeJSONError(w, http.StatusUnauthorized, "login required")
				return
			}
			a = access{s: s, user: s.user, role: s.role}
		} else {
			if !hostAllowed(r) {
				http.Error(w, "console: the Host header must be a loopback address (DNS rebinding guard)", http.StatusForbidden)
				return
			}
			if s == nil && page && r.Method == http.MethodGet {
				s = c.sessions.create("", RoleWrite, c.now())
				c.setCookie(w, r, s)
			}
			a = access{s: s, user: "", role: RoleWrite}
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && !csrfOK(r, a.s) {
			c.log.Warn("console request refused: missing or wrong CSRF token", "path", r.URL.Path, "remote", r.RemoteAddr)
			writeJSONError(w, http.StatusForbidden, "missing or invalid CSRF token")
			return
		}
		if write && a.role != RoleWrite {
			writeJSONError(w, http.StatusForbidden, "your role may not write points")
			return
		}
		h(w, r, a)
	}
}

func urlQueryEscape(s string) string {
	if !strings.HasPrefix(s, "/") || strings.HasPrefix(s, "//") {
		return "%2F"
	}
	return strings.NewReplacer("%", "%25", "&", "%26", "#", "%23", "?", "%3F", "+", "%2B", " ", "%20").Replace(s)
}
