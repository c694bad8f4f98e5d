package broker

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Listener types accepted in ListenerConfig.Type.
const (
	ListenerTCP       = "tcp"
	ListenerTLS       = "tls"
	ListenerWebsocket = "websocket"
)

// Values of LimitsConfig.WhenQueueFull.
const (
	QueueFullDrop       = "drop"
	QueueFullDisconnect = "disconnect"
)

// Config is the `broker:` section of the configuration file. Call Defaults
// before Validate; New does both on its own copy.
type Config struct {
	// Listeners are the network endpoints devices connect to, bound in this
	// order. Zero value: one plain TCP listener on 0.0.0.0:1883.
	Listeners []ListenerConfig `yaml:"listeners"`
	// Auth holds anonymous access, users and the ACL. Zero value: nobody can
	// connect over the network (anonymous off, no users).
	Auth AuthConfig `yaml:"auth"`
	// Limits bounds per-client and server-wide resources.
	Limits LimitsConfig `yaml:"limits"`
	// SysInterval is how often the $SYS/broker/... statistics topics are
	// republished (retained). Whole seconds, at least 1s. Zero value: 10s.
	SysInterval time.Duration `yaml:"sys_interval"`
}

// ListenerConfig is one network listener.
type ListenerConfig struct {
	// Type is tcp, tls or websocket (a websocket listener with a tls block
	// serves wss). Required.
	Type string `yaml:"type"`
	// Address is host:port to bind; port 0 picks a free port (see
	// Broker.Addrs). Required.
	Address string `yaml:"address"`
	// TLS is required for type tls, optional for websocket, refused for tcp.
	TLS *TLSConfig `yaml:"tls"`
}

// TLSConfig holds PEM files for a TLS listener.
type TLSConfig struct {
	// CertFile is the server certificate chain (PEM). Required.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the server private key (PEM). Required.
	KeyFile string `yaml:"key_file"`
	// ClientCAFile, when set, makes the listener require a client
	// certificate signed by one of these CAs (PEM); connections without one
	// fail the TLS handshake. Empty: no client certificate is asked for.
	ClientCAFile string `yaml:"client_ca_file"`
}

// AuthConfig is authentication and authorisation. It can be swapped on a
// running broker with Broker.SetAuth.
type AuthConfig struct {
	// Anonymous lets clients connect without a username. Default false.
	// A client that presents a username must match a user even when
	// anonymous access is on.
	Anonymous bool `yaml:"anonymous"`
	// Users are the accounts, checked with bcrypt.
	Users []UserConfig `yaml:"users"`
	// ACL is a list of allow rules. Empty: every connected client may
	// publish and subscribe to everything. Not empty: a publish or
	// subscription is allowed only when a rule that applies to the client
	// allows it and no rule that applies denies it (deny wins).
	ACL []ACLRule `yaml:"acl"`
}

// UserConfig is one account.
type UserConfig struct {
	// Username is the MQTT username. Required, unique, not "*".
	Username string `yaml:"username"`
	// PasswordHash is a bcrypt hash ($2a$/$2b$/$2y$) of the password.
	PasswordHash string `yaml:"password_hash"`
}

// ACLRule applies to the clients it names and lists topic filters. Filters
// may contain {username} and {clientid}, replaced by the client's values;
// a filter with {username} never applies to an anonymous client.
type ACLRule struct {
	// Username the rule applies to; "*" applies to every client, anonymous
	// ones included. Required.
	Username string `yaml:"username"`
	// ClientID, when set, narrows the rule to that client id.
	ClientID string `yaml:"clientid"`
	// Publish lists filters the client may publish to.
	Publish []string `yaml:"publish"`
	// Subscribe lists filters the client may subscribe to (a requested
	// filter must lie inside one of them) and receive from.
	Subscribe []string `yaml:"subscribe"`
	// Deny lists filters the client may neither publish to nor receive
	// from; deny wins over every allow.
	Deny []string `yaml:"deny"`
}

// LimitsConfig bounds resources. A zero field means "default", except for
// the pointer fields, where only nil does and 0 is a value.
type LimitsConfig struct {
	// MaxClients is the number of concurrently connected network clients;
	// further CONNECTs get "server unavailable"/"server busy". Default 1000.
	MaxClients int `yaml:"max_clients"`
	// MaxPacketSize is the largest packet accepted from or sent to a
	// client, in bytes (whole packet). Default 262144 (256 KiB).
	MaxPacketSize int `yaml:"max_packet_size"`
	// ReceiveMaximum is the number of unacknowledged QoS 1/2 publishes the
	// broker accepts from one client (announced to MQTT 5 clients).
	// 1..65535, default 256.
	ReceiveMaximum int `yaml:"receive_maximum"`
	// MaxInflight caps the number of QoS 1/2 messages sent to one client and
	// not yet acknowledged; a client's own Receive Maximum (MQTT 5) lowers
	// it for that client. The broker never has more than min(Receive
	// Maximum, MaxInflight) unacknowledged QoS 1/2 PUBLISH packets towards a
	// client, whoever published them; what does not fit waits in the
	// client's queue (MaxQueuedMessages) and leaves in order as
	// acknowledgements come back. 1..65535, default 1024.
	MaxInflight int `yaml:"max_inflight"`
	// MaxQueuedMessages is the depth of a client's outbound queue (all QoS):
	// messages waiting for the connection or, for QoS 1/2, for room under
	// the client's in-flight limit. While it holds this many, publishers
	// wait, up to DeliveryWait; then WhenQueueFull applies (the queue has
	// MaxInflight slots of headroom on top for publishers that pass the
	// check at the same moment). An offline persistent session holds up to
	// MaxQueuedMessages + 2×MaxInflight QoS 1/2 messages. Must be at least
	// MaxInflight. Default 2×MaxInflight.
	MaxQueuedMessages int `yaml:"max_queued_messages"`
	// MaxKeepalive is the largest keepalive granted to MQTT 5 clients; one
	// asking for more (or for none) is told this value in CONNACK.
	// Whole seconds, 1s..65535s. Default 5m. MQTT 3.1.1 has no way to tell
	// the client, so its keepalive is used as requested.
	MaxKeepalive time.Duration `yaml:"max_keepalive"`
	// MaxSessionExpiry caps how long a disconnected persistent session is
	// kept (MQTT 5 session expiry; 3.1.1 clean_session=false sessions use
	// it as is). Whole seconds. nil (key absent): 168h; 0 keeps no
	// session past its connection.
	MaxSessionExpiry *time.Duration `yaml:"max_session_expiry"`
	// MaxMessageExpiry caps message expiry for queued and retained
	// messages. Whole seconds. Zero: no server limit (a message's own MQTT 5
	// expiry still applies); retained messages then live until replaced.
	MaxMessageExpiry time.Duration `yaml:"max_message_expiry"`
	// TopicAliasMaximum is the number of topic aliases accepted from and
	// used towards an MQTT 5 client. 0..65535; nil (key absent): 64; 0
	// turns topic aliases off.
	TopicAliasMaximum *int `yaml:"topic_alias_maximum"`
	// DeliveryWait is how long a publish may wait for a subscriber whose
	// queue is full (see MaxQueuedMessages) before WhenQueueFull applies to
	// that subscriber; publishers then stop waiting for it until its queue
	// has emptied, so a stuck subscriber costs each publisher at most one
	// such wait. nil (key absent): 1s; 0: never wait. At most 1m.
	DeliveryWait *time.Duration `yaml:"delivery_wait"`
	// WhenQueueFull is what happens to a subscriber that kept its queue full
	// for DeliveryWait: "drop" (default) — it loses the messages that do
	// not fit, counted in Stats.MessagesDropped and logged once when it
	// starts and once when it has caught up; "disconnect" — its connection
	// is closed (MQTT 5: DISCONNECT 0x97, quota exceeded), and a persistent
	// session keeps its QoS 1/2 messages for the next connection.
	WhenQueueFull string `yaml:"when_queue_full"`
}

// Defaults fills every unset field with its documented default, in place.
func (c *Config) Defaults() {
	if len(c.Listeners) == 0 {
		c.Listeners = []ListenerConfig{{Type: ListenerTCP, Address: "0.0.0.0:1883"}}
	}
	if c.SysInterval == 0 {
		c.SysInterval = 10 * time.Second
	}
	l := &c.Limits
	setInt := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	setDur := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	setInt(&l.MaxClients, 1000)
	setInt(&l.MaxPacketSize, 256<<10)
	setInt(&l.ReceiveMaximum, 256)
	setInt(&l.MaxInflight, 1024)
	setInt(&l.MaxQueuedMessages, 2*l.MaxInflight)
	setDur(&l.MaxKeepalive, 5*time.Minute)
	if l.MaxSessionExpiry == nil {
		l.MaxSessionExpiry = new(168 * time.Hour)
	}
	if l.TopicAliasMaximum == nil {
		l.TopicAliasMaximum = new(64)
	}
	if l.DeliveryWait == nil {
		l.DeliveryWait = new(time.Second)
	}
	if l.WhenQueueFull == "" {
		l.WhenQueueFull = QueueFullDrop
	}
}

// FieldError is one configuration problem; Path is relative to `broker:`.
type FieldError struct {
	Path, Msg string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// FieldPath returns the path of the offending key, e.g. listeners[1].tls.cert_file.
func (e *FieldError) FieldPath() string { return e.Path }

// Validate reports every problem as a *FieldError joined with errors.Join.
// It reads the TLS files named by the listeners.
func (c *Config) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	if len(c.Listeners) == 0 {
		add("listeners", "at least one listener is required")
	}
	for i, l := range c.Listeners {
		p := fmt.Sprintf("listeners[%d]", i)
		switch l.Type {
		case ListenerTCP:
			if l.TLS != nil {
				add(p+".tls", "not allowed for type tcp (use type tls)")
			}
		case ListenerTLS:
			if l.TLS == nil {
				add(p+".tls", "required for type tls")
			}
		case ListenerWebsocket:
		case "":
			add(p+".type", "required (tcp, tls or websocket)")
		default:
			add(p+".type", "unknown listener type %q (want tcp, tls or websocket)", l.Type)
		}
		if err := checkAddress(l.Address); err != nil {
			add(p+".address", "%v", err)
		}
		if l.TLS != nil && l.Type != ListenerTCP {
			for _, e := range l.TLS.check() {
				add(p+".tls."+e.Path, "%s", e.Msg)
			}
		}
	}
	errs = append(errs, c.Auth.validate("auth")...)
	errs = append(errs, c.Limits.validate("limits")...)
	if c.SysInterval < time.Second || c.SysInterval%time.Second != 0 {
		add("sys_interval", "must be whole seconds, at least 1s (got %s)", c.SysInterval)
	}
	return errors.Join(errs...)
}

func checkAddress(addr string) error {
	if addr == "" {
		return errors.New("required (host:port)")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("not host:port: %w", err)
	}
	if host != "" && net.ParseIP(host) == nil && strings.ContainsAny(host, " /") {
		return fmt.Errorf("bad host %q", host)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("bad port %q", port)
	}
	return nil
}

func (t *TLSConfig) check() []*FieldError {
	var errs []*FieldError
	if t.CertFile == "" {
		errs = append(errs, &FieldError{"cert_file", "required"})
	} else if _, err := os.Stat(t.CertFile); err != nil {
		errs = append(errs, &FieldError{"cert_file", err.Error()})
	}
	if t.KeyFile == "" {
		errs = append(errs, &FieldError{"key_file", "required"})
	} else if _, err := os.Stat(t.KeyFile); err != nil {
		errs = append(errs, &FieldError{"key_file", err.Error()})
	}
	if len(errs) == 0 {
		if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
			errs = append(errs, &FieldError{"cert_file", "load key pair: " + err.Error()})
		}
	}
	if t.ClientCAFile != "" {
		if _, err := loadCAPool(t.ClientCAFile); err != nil {
			errs = append(errs, &FieldError{"client_ca_file", err.Error()})
		}
	}
	return errs
}

func loadCAPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificates found", file)
	}
	return pool, nil
}

// tlsConfig builds the server tls.Config for a listener.
func (t *TLSConfig) tlsConfig() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("load key pair %s: %w", t.CertFile, err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if t.ClientCAFile != "" {
		pool, err := loadCAPool(t.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("client ca: %w", err)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

func (a *AuthConfig) validate(prefix string) []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, &FieldError{Path: prefix + "." + path, Msg: fmt.Sprintf(format, args...)})
	}
	seen := map[string]int{}
	for i, u := range a.Users {
		p := fmt.Sprintf("users[%d]", i)
		switch {
		case u.Username == "":
			add(p+".username", "required")
		case u.Username == "*":
			add(p+".username", `"*" is reserved for ACL rules`)
		default:
			if j, dup := seen[u.Username]; dup {
				add(p+".username", "duplicate of users[%d]", j)
			}
			seen[u.Username] = i
		}
		if u.PasswordHash == "" {
			add(p+".password_hash", "required (bcrypt hash)")
		} else if _, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil {
			add(p+".password_hash", "not a bcrypt hash: %v", err)
		}
	}
	for i, r := range a.ACL {
		p := fmt.Sprintf("acl[%d]", i)
		if r.Username == "" {
			add(p+".username", `required (a username or "*")`)
		}
		if len(r.Publish)+len(r.Subscribe)+len(r.Deny) == 0 {
			add(p, "rule lists no publish, subscribe or deny filters")
		}
		lists := []struct {
			key     string
			filters []string
		}{{"publish", r.Publish}, {"subscribe", r.Subscribe}, {"deny", r.Deny}}
		for _, l := range lists {
			for j, f := range l.filters {
				if err := checkACLFilter(f); err != nil {
					add(fmt.Sprintf("%s.%s[%d]", p, l.key, j), "%v", err)
				}
			}
		}
	}
	return errs
}

func checkACLFilter(f string) error {
	x := strings.NewReplacer("{username}", "u", "{clientid}", "c").Replace(f)
	if strings.ContainsAny(x, "{}") {
		return fmt.Errorf("filter %q: unknown placeholder (only {username} and {clientid})", f)
	}
	if !validFilter(x) {
		return fmt.Errorf("filter %q is not a valid MQTT topic filter", f)
	}
	return nil
}

func (l *LimitsConfig) validate(prefix string) []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, &FieldError{Path: prefix + "." + path, Msg: fmt.Sprintf(format, args...)})
	}
	rangeInt := func(name string, v, lo, hi int) {
		if v < lo || v > hi {
			add(name, "must be between %d and %d (got %d)", lo, hi, v)
		}
	}
	rangeInt("max_clients", l.MaxClients, 1, math.MaxInt32)
	rangeInt("max_packet_size", l.MaxPacketSize, 64, 268435455)
	rangeInt("receive_maximum", l.ReceiveMaximum, 1, 65535)
	rangeInt("max_inflight", l.MaxInflight, 1, 65535)
	if l.TopicAliasMaximum != nil {
		rangeInt("topic_alias_maximum", *l.TopicAliasMaximum, 0, 65535)
	}
	if l.MaxQueuedMessages < l.MaxInflight || l.MaxQueuedMessages > math.MaxInt32 {
		add("max_queued_messages", "must be at least max_inflight (%d) (got %d)", l.MaxInflight, l.MaxQueuedMessages)
	}
	wholeSeconds := func(name string, d, lo, hi time.Duration) {
		if d < lo || d > hi || d%time.Second != 0 {
			add(name, "must be whole seconds between %s and %s (got %s)", lo, hi, d)
		}
	}
	wholeSeconds("max_keepalive", l.MaxKeepalive, time.Second, 65535*time.Second)
	if l.MaxSessionExpiry != nil {
		wholeSeconds("max_session_expiry", *l.MaxSessionExpiry, 0, math.MaxUint32*time.Second)
	}
	wholeSeconds("max_message_expiry", l.MaxMessageExpiry, 0, math.MaxUint32*time.Second)
	if l.DeliveryWait != nil && (*l.DeliveryWait < 0 || *l.DeliveryWait > time.Minute) {
		add("delivery_wait", "must be between 0s and 1m (got %s)", *l.DeliveryWait)
	}
	switch l.WhenQueueFull {
	case QueueFullDrop, QueueFullDisconnect:
	default:
		add("when_queue_full", "must be %s or %s (got %q)", QueueFullDrop, QueueFullDisconnect, l.WhenQueueFull)
	}
	return errs
}
