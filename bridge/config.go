package bridge

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/fieldgate/fieldgate/buffer"
)

// Config is the `bridge:` section of the configuration file. The zero value
// plus Defaults is a bridge with no upstream; the gateway does not create a
// bridge when the section is absent.
type Config struct {
	Upstream  UpstreamConfig   `yaml:"upstream"`
	Forward   []ForwardRoute   `yaml:"forward"`   // local → upstream
	Subscribe []SubscribeRoute `yaml:"subscribe"` // upstream → local
	Buffer    buffer.Config    `yaml:"buffer"`

	// Inflight is the window of QoS 1/2 messages sent upstream but not yet
	// acknowledged (PUBACK/PUBCOMP). Default 1024. The effective window is
	// min(Inflight, the upstream's Receive Maximum) for MQTT 5 (mosquitto
	// announces its max_inflight_messages, 20 by default), and the
	// messages in flight never hold more than 4 MiB of topics and payloads
	// (at least one message is always sent).
	Inflight int `yaml:"inflight"`
	// ReplayRate paces the drain of the buffer (backlog and live messages
	// alike, since both leave through the same FIFO cursor). Zero fields
	// mean unlimited.
	ReplayRate ReplayRate `yaml:"replay_rate"`
	// StallTimeout: when messages are in flight and nothing has been
	// acknowledged for this long, the connection is dropped and
	// re-established; unacknowledged records are then resent in order.
	// Default 30s.
	StallTimeout time.Duration `yaml:"stall_timeout"`
	// StatusInterval is the period of the JSON status document published
	// (QoS 0, not retained) on `<status_topic>/bridge`. nil (key absent):
	// 1m; 0 (or negative) disables it.
	StatusInterval *time.Duration `yaml:"status_interval"`
}

// ReplayRate limits the drain rate. A zero field means no limit.
type ReplayRate struct {
	MessagesPerSecond float64 `yaml:"messages_per_second"`
	BytesPerSecond    float64 `yaml:"bytes_per_second"` // payload + topic bytes
}

// UpstreamConfig describes the single upstream broker connection.
type UpstreamConfig struct {
	// URL of the upstream broker: mqtt://host[:1883], mqtts://host[:8883],
	// ws://host[:80]/path, wss://host[:443]/path (path defaults to /mqtt).
	URL string `yaml:"url"`
	// Protocol is "5" (default) or "3.1.1".
	Protocol string `yaml:"protocol"`
	// ClientID is a template: {gateway} is replaced by the gateway id.
	// Default "{gateway}".
	ClientID string `yaml:"client_id"`
	Username string `yaml:"username"`
	// PasswordFile holds the password; surrounding whitespace is trimmed.
	PasswordFile string    `yaml:"password_file"`
	TLS          TLSConfig `yaml:"tls"`
	// KeepAlive is the MQTT keep alive interval. nil (key absent): 30s;
	// 0 turns keep alive off (no PINGREQ; a dead link is then only
	// noticed by the stall timeout or TCP).
	KeepAlive *time.Duration `yaml:"keepalive"`
	// CleanStart forces a clean session on every connection. By default
	// (false) the first connection of a process starts clean and later
	// reconnects resume the session (MQTT 5 only), which keeps QoS 2
	// exactly-once across reconnects (see the package documentation).
	CleanStart bool `yaml:"clean_start"`
	// SessionExpiry is the MQTT 5 session expiry interval requested when
	// CleanStart is false. nil (key absent): 1h; 0 asks the upstream to
	// end the session when the connection closes.
	SessionExpiry *time.Duration `yaml:"session_expiry"`
	// StatusTopic is a template ({gateway}); the connection's retained will
	// is "offline" and its retained birth message "online" on this topic.
	// Default "sites/{gateway}/status".
	StatusTopic string `yaml:"status_topic"`
	// ConnectTimeout bounds dial + TLS + websocket + CONNECT/CONNACK. Default 10s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// Backoff between connection attempts: exponential from Min to Max
	// with full jitter. Defaults 1s and 2m.
	Backoff Backoff `yaml:"backoff"`
}

// Backoff bounds the reconnect delay.
type Backoff struct {
	Min time.Duration `yaml:"min"`
	Max time.Duration `yaml:"max"`
}

// TLSConfig configures mqtts:// and wss:// connections.
type TLSConfig struct {
	CAFile             string `yaml:"ca_file"`   // PEM roots; default system roots
	CertFile           string `yaml:"cert_file"` // client certificate (mTLS), with KeyFile
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"` // default: the URL host
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// ForwardRoute sends local messages matching Filter upstream, with Prefix
// (a template, {gateway}) prepended to the topic.
type ForwardRoute struct {
	Filter string `yaml:"filter"`
	Prefix string `yaml:"prefix"`
	// QoS is the maximum QoS used upstream (the message's own QoS is
	// lowered to it, never raised). nil (key absent): 1. With 0 every
	// message goes upstream at QoS 0 and, unless BufferQoS0 is set, is
	// forwarded best-effort without being written to the buffer.
	QoS *byte `yaml:"qos"`
	// BufferQoS0 stores QoS 0 messages in the buffer too: they survive
	// outages and restarts and leave in order with the others, still at
	// QoS 0 (acked in the buffer once written to the connection). By
	// default QoS 0 messages are forwarded best-effort when connected and
	// dropped (counted as "qos0_offline") otherwise.
	BufferQoS0 bool `yaml:"buffer_qos0"`
}

// SubscribeRoute subscribes upstream to Filter (a template) and publishes
// what arrives locally: the topic loses StripPrefix (a template) and gains
// Prefix. Messages are published with Origin set to bridge.Origin and are
// never forwarded back upstream.
type SubscribeRoute struct {
	Filter      string `yaml:"filter"`
	StripPrefix string `yaml:"strip_prefix"`
	Prefix      string `yaml:"prefix"`
	QoS         *byte  `yaml:"qos"` // subscription QoS 0-2; nil (key absent): 1
}

// FieldError is one configuration problem; Path is relative to `bridge:`.
type FieldError struct{ Path, Msg string }

func (e *FieldError) Error() string     { return e.Path + ": " + e.Msg }
func (e *FieldError) FieldPath() string { return e.Path }

const (
	// DefaultQoS is the QoS of a forward or subscribe route without a
	// `qos:` key.
	DefaultQoS            = 1
	defaultKeepAlive      = 30 * time.Second
	defaultSessionExpiry  = time.Hour
	defaultInflight       = 1024
	defaultStallTimeout   = 30 * time.Second
	defaultStatusInterval = time.Minute
)

// Defaults fills every unset field with its default. It is idempotent.
// Fields whose zero value means something (route QoS 0, keepalive 0,
// session_expiry 0, status_interval 0) are pointers and only a nil one is
// defaulted; the other fields treat 0 as unset.
func (c *Config) Defaults() {
	u := &c.Upstream
	if u.Protocol == "" {
		u.Protocol = "5"
	}
	if u.ClientID == "" {
		u.ClientID = "{gateway}"
	}
	if u.KeepAlive == nil {
		u.KeepAlive = new(defaultKeepAlive)
	}
	if u.SessionExpiry == nil {
		u.SessionExpiry = new(defaultSessionExpiry)
	}
	if u.StatusTopic == "" {
		u.StatusTopic = "sites/{gateway}/status"
	}
	if u.ConnectTimeout == 0 {
		u.ConnectTimeout = 10 * time.Second
	}
	if u.Backoff.Min == 0 {
		u.Backoff.Min = time.Second
	}
	if u.Backoff.Max == 0 {
		u.Backoff.Max = 2 * time.Minute
	}
	// The route slices may be shared with the caller's Config (reload
	// compares the two): default copies.
	c.Forward = slices.Clone(c.Forward)
	for i := range c.Forward {
		if c.Forward[i].QoS == nil {
			c.Forward[i].QoS = new(byte(DefaultQoS))
		}
	}
	c.Subscribe = slices.Clone(c.Subscribe)
	for i := range c.Subscribe {
		if c.Subscribe[i].QoS == nil {
			c.Subscribe[i].QoS = new(byte(DefaultQoS))
		}
	}
	if c.Inflight == 0 {
		c.Inflight = defaultInflight
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = defaultStallTimeout
	}
	if c.StatusInterval == nil {
		c.StatusInterval = new(defaultStatusInterval)
	}
	c.Buffer.Defaults()
}

// Validate reports every problem (errors.Join of *FieldError). Call after
// Defaults.
func (c *Config) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	u := c.Upstream
	if u.URL == "" {
		add("upstream.url", "required")
	} else if pu, err := url.Parse(u.URL); err != nil {
		add("upstream.url", "%v", err)
	} else {
		switch pu.Scheme {
		case "mqtt", "mqtts", "tcp", "ssl", "tls", "ws", "wss":
		default:
			add("upstream.url", "scheme %q: want mqtt, mqtts, ws or wss", pu.Scheme)
		}
		if pu.Hostname() == "" {
			add("upstream.url", "missing host")
		}
	}
	switch u.Protocol {
	case "5", "3.1.1":
	default:
		add("upstream.protocol", "%q: want 5 or 3.1.1", u.Protocol)
	}
	checkTemplate(add, "upstream.client_id", u.ClientID)
	if u.ClientID == "" {
		add("upstream.client_id", "required")
	}
	checkTemplate(add, "upstream.status_topic", u.StatusTopic)
	if err := checkTopicName(strings.ReplaceAll(u.StatusTopic, "{gateway}", "g")); err != nil {
		add("upstream.status_topic", "%v", err)
	}
	if (u.TLS.CertFile == "") != (u.TLS.KeyFile == "") {
		add("upstream.tls", "cert_file and key_file must be set together")
	}
	if ka := u.KeepAlive; ka != nil && (*ka < 0 || *ka > 65535*time.Second) {
		add("upstream.keepalive", "%v out of range [0, 65535s]", *ka)
	}
	if se := u.SessionExpiry; se != nil && (*se < 0 || *se > math.MaxUint32*time.Second) {
		add("upstream.session_expiry", "%v out of range [0, %v]", *se, math.MaxUint32*time.Second)
	}
	if u.ConnectTimeout < 0 {
		add("upstream.connect_timeout", "must not be negative")
	}
	if u.Backoff.Min <= 0 {
		add("upstream.backoff.min", "must be positive")
	}
	if u.Backoff.Max < u.Backoff.Min {
		add("upstream.backoff.max", "%v is below backoff.min %v", u.Backoff.Max, u.Backoff.Min)
	}
	for i, r := range c.Forward {
		p := fmt.Sprintf("forward[%d]", i)
		if err := checkFilter(r.Filter); err != nil {
			add(p+".filter", "%v", err)
		}
		checkTemplate(add, p+".filter", r.Filter)
		checkTemplate(add, p+".prefix", r.Prefix)
		if strings.ContainsAny(r.Prefix, "+#") {
			add(p+".prefix", "must not contain wildcards")
		}
		if r.QoS != nil && *r.QoS > 2 {
			add(p+".qos", "%d: want 0, 1 or 2", *r.QoS)
		}
	}
	for i, r := range c.Subscribe {
		p := fmt.Sprintf("subscribe[%d]", i)
		f := strings.ReplaceAll(r.Filter, "{gateway}", "g")
		if err := checkFilter(f); err != nil {
			add(p+".filter", "%v", err)
		}
		checkTemplate(add, p+".filter", r.Filter)
		checkTemplate(add, p+".strip_prefix", r.StripPrefix)
		checkTemplate(add, p+".prefix", r.Prefix)
		if strings.ContainsAny(r.StripPrefix, "+#") {
			add(p+".strip_prefix", "must not contain wildcards")
		}
		if strings.ContainsAny(r.Prefix, "+#") {
			add(p+".prefix", "must not contain wildcards")
		}
		if r.QoS != nil && *r.QoS > 2 {
			add(p+".qos", "%d: want 0, 1 or 2", *r.QoS)
		}
	}
	if c.Inflight < 1 || c.Inflight > 65535 {
		add("inflight", "%d out of range [1, 65535]", c.Inflight)
	}
	if c.ReplayRate.MessagesPerSecond < 0 {
		add("replay_rate.messages_per_second", "must not be negative")
	}
	if c.ReplayRate.BytesPerSecond < 0 {
		add("replay_rate.bytes_per_second", "must not be negative")
	}
	if c.StallTimeout <= 0 {
		add("stall_timeout", "must be positive")
	}
	if err := c.Buffer.Validate(); err != nil {
		errs = append(errs, prefixErrors("buffer", err)...)
	}
	return errors.Join(errs...)
}

// prefixErrors re-roots the buffer package's field errors under "buffer.".
func prefixErrors(prefix string, err error) []error {
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	out := make([]error, 0, len(list))
	for _, e := range list {
		var fp interface{ FieldPath() string }
		if errors.As(e, &fp) {
			msg := e.Error()
			msg = strings.TrimPrefix(msg, fp.FieldPath()+": ")
			out = append(out, &FieldError{Path: prefix + "." + fp.FieldPath(), Msg: msg})
			continue
		}
		out = append(out, &FieldError{Path: prefix, Msg: e.Error()})
	}
	return out
}

// checkTemplate rejects placeholders other than {gateway}.
func checkTemplate(add func(string, string, ...any), path, s string) {
	rest := strings.ReplaceAll(s, "{gateway}", "")
	if strings.ContainsAny(rest, "{}") {
		add(path, "%q: only the {gateway} placeholder is supported", s)
	}
}

// qosOf is a route's QoS: DefaultQoS when unset.
func qosOf(q *byte) byte {
	if q == nil {
		return DefaultQoS
	}
	return *q
}

// durationOf is *d, or def when d is nil.
func durationOf(d *time.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return *d
}

func expand(tmpl, gateway string) string { return strings.ReplaceAll(tmpl, "{gateway}", gateway) }

// checkFilter validates an MQTT topic filter.
func checkFilter(f string) error {
	if f == "" {
		return errors.New("empty topic filter")
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return fmt.Errorf("%q: '#' must be a whole last level", f)
		}
		if strings.Contains(l, "+") && l != "+" {
			return fmt.Errorf("%q: '+' must be a whole level", f)
		}
	}
	return nil
}

func checkTopicName(t string) error {
	if t == "" {
		return errors.New("empty topic")
	}
	if strings.ContainsAny(t, "+#") {
		return fmt.Errorf("%q: topic names must not contain wildcards", t)
	}
	return nil
}

// match reports whether topic matches the MQTT filter. Topics starting with
// '$' are not matched by a leading wildcard (MQTT-4.7.2-1).
func match(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "#") || strings.HasPrefix(filter, "+")) {
		return false
	}
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		tl, trest, tmore := strings.Cut(topic, "/")
		switch {
		case fl == "#":
			return true
		case fl != "+" && fl != tl:
			return false
		}
		if !fmore && !tmore {
			return true
		}
		if !fmore {
			return false
		}
		if !tmore {
			// "a/#" matches "a".
			return frest == "#"
		}
		filter, topic = frest, trest
	}
}
