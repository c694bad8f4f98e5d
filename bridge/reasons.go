package bridge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	mqttpackets "github.com/eclipse/paho.mqtt.golang/packets"
)

// RefusedError is a refusal by the upstream broker: a CONNACK or a
// DISCONNECT with an error reason code. Its message names the code and says
// what to check, for the person reading the journal.
type RefusedError struct {
	// Packet is "CONNACK" or "DISCONNECT".
	Packet string
	// Code is the MQTT 5 reason code (MQTT 3.1.1 CONNACK return codes are
	// translated to their MQTT 5 equivalents).
	Code byte
	// Reason is the broker's reason string, if it sent one.
	Reason string
	// ClientID is the client id the gateway connected with.
	ClientID string
}

func (e *RefusedError) Error() string {
	what := "refused the login"
	if e.Packet == "DISCONNECT" {
		what = "closed the connection"
	}
	msg := fmt.Sprintf("upstream %s (%#02x %s)", what, e.Code, reasonName(e.Code))
	if e.Reason != "" {
		msg += fmt.Sprintf(" %q", e.Reason)
	}
	if h := e.hint(); h != "" {
		msg += ": " + h
	}
	return msg
}

// TakenOver reports whether another client took the session over.
func (e *RefusedError) TakenOver() bool { return e.Code == 0x8E }

func (e *RefusedError) hint() string {
	switch e.Code {
	case 0x86, 0x87, 0x8C:
		return "check bridge.upstream.username / password_file (and the upstream's ACL for this user)"
	case 0x85:
		return fmt.Sprintf("the upstream does not accept the client id %q: check bridge.upstream.client_id", e.ClientID)
	case 0x84:
		return "set bridge.upstream.protocol: 3.1.1"
	case 0x8A:
		return "this client is banned by the upstream: ask its operator"
	case 0x88, 0x89, 0x8B, 0x9F:
		return "the upstream is busy or going down; the gateway keeps retrying"
	case 0x8E:
		return fmt.Sprintf("another client connected with the same client id %q: is gateway.id unique among your gateways?", e.ClientID)
	case 0x95:
		return "a message is larger than the upstream accepts: raise its limit or send smaller payloads"
	case 0x97:
		return "the upstream's quota for this client is exceeded"
	case 0x90:
		return "check bridge.forward prefixes: the upstream refuses the topic"
	case 0x9C, 0x9D:
		return "the upstream asks to use another server: update bridge.upstream.url"
	case 0x8D:
		return "the upstream saw no traffic within the keep alive: check the network or bridge.upstream.keepalive"
	case 0x9A:
		return "the upstream does not accept retained messages"
	case 0x9B:
		return "the upstream does not accept this QoS: lower bridge.forward qos"
	}
	return ""
}

// reasonNames are MQTT 5 reason codes ≥ 0x80 (section 2.4).
var reasonNames = map[byte]string{
	0x00: "normal disconnection",
	0x04: "disconnect with will message",
	0x80: "unspecified error",
	0x81: "malformed packet",
	0x82: "protocol error",
	0x83: "implementation specific error",
	0x84: "unsupported protocol version",
	0x85: "client identifier not valid",
	0x86: "bad user name or password",
	0x87: "not authorized",
	0x88: "server unavailable",
	0x89: "server busy",
	0x8A: "banned",
	0x8B: "server shutting down",
	0x8C: "bad authentication method",
	0x8D: "keep alive timeout",
	0x8E: "session taken over",
	0x8F: "topic filter invalid",
	0x90: "topic name invalid",
	0x93: "receive maximum exceeded",
	0x94: "topic alias invalid",
	0x95: "packet too large",
	0x96: "message rate too high",
	0x97: "quota exceeded",
	0x98: "administrative action",
	0x99: "payload format invalid",
	0x9A: "retain not supported",
	0x9B: "QoS not supported",
	0x9C: "use another server",
	0x9D: "server moved",
	0x9E: "shared subscriptions not supported",
	0x9F: "connection rate exceeded",
	0xA0: "maximum connect time",
	0xA1: "subscription identifiers not supported",
	0xA2: "wildcard subscriptions not supported",
}

func reasonName(code byte) string {
	if n, ok := reasonNames[code]; ok {
		return n
	}
	return "reason code"
}

// refusal3 translates an MQTT 3.1.1 CONNACK refusal from paho.mqtt.golang
// into a RefusedError, or returns nil when err is not one.
func refusal3(err error, clientID string) *RefusedError {
	codes := []struct {
		err  error
		code byte
	}{
		{mqttpackets.ErrorRefusedBadProtocolVersion, 0x84},
		{mqttpackets.ErrorRefusedIDRejected, 0x85},
		{mqttpackets.ErrorRefusedServerUnavailable, 0x88},
		{mqttpackets.ErrorRefusedBadUsernameOrPassword, 0x86},
		{mqttpackets.ErrorRefusedNotAuthorised, 0x87},
	}
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return &RefusedError{Packet: "CONNACK", Code: c.code, ClientID: clientID}
		}
	}
	return nil
}

// flapWindow: a connection that ends sooner than this after its CONNACK
// counts as closed "right after" it was accepted; flapCount such
// connections in a row are reported as a likely client id clash.
const (
	flapWindow = 10 * time.Second
	flapCount  = 3
)

// linkWatch is the reconnect loop's memory of what it logged, so that a
// state is logged once at warn when it starts and at debug while it lasts.
// It is owned by Run's goroutine.
type linkWatch struct {
	lastFail  string    // the class of the last failure logged at warn
	since     time.Time // when the current connection was accepted
	short     int       // connections in a row that ended within flapWindow
	warnedOut bool      // a take-over or flapping was logged at warn
}

func (w *linkWatch) connected() {
	w.lastFail = ""
	w.since = time.Now()
}

// logConnectFailure logs a failed connection attempt and the delay before
// the next one: at warn when the cause changes, at debug while it lasts.
func (b *Bridge) logConnectFailure(err error, retry time.Duration) {
	msg, class := "upstream unreachable; buffering", "unreachable"
	var r *RefusedError
	if errors.As(err, &r) {
		msg, class = r.Error()+"; buffering", r.Error()
	}
	if class == b.watch.lastFail {
		b.log.Debug("upstream connect failed", "err", err, "retry_in", retry.Round(time.Millisecond))
		return
	}
	b.watch.lastFail = class
	if r != nil {
		b.log.Warn(msg, "url", b.ep.url.Redacted(), "client_id", b.clientID, "retry_in", retry.Round(time.Millisecond))
		return
	}
	if hint := ConnectHint(err); hint != "" {
		b.log.Warn(msg, "url", b.ep.url.Redacted(), "err", err, "hint", hint, "retry_in", retry.Round(time.Millisecond))
		return
	}
	b.log.Warn(msg, "url", b.ep.url.Redacted(), "err", err, "retry_in", retry.Round(time.Millisecond))
}

// logLost logs the end of an accepted connection and the delay before the
// next attempt. A DISCONNECT from the upstream gives the reason; a session
// taken over (0x8E), or flapCount connections in a row closed within
// flapWindow of their CONNACK, is reported as a probable clash of client
// ids, once until a connection lasts.
func (b *Bridge) logLost(err error, retry time.Duration) {
	if r := b.disc.Swap(nil); r != nil {
		err = r
	}
	w := &b.watch
	if time.Since(w.since) < flapWindow && !errors.Is(err, errStalled) {
		w.short++
	} else {
		w.short, w.warnedOut = 0, false
	}
	retry = retry.Round(time.Millisecond)
	var r *RefusedError
	switch {
	case errors.As(err, &r) && r.TakenOver():
		if w.warnedOut {
			b.log.Debug("upstream session taken over again", "client_id", b.clientID, "retry_in", retry)
			return
		}
		w.warnedOut = true
		b.log.Warn(r.Error(), "client_id", b.clientID, "retry_in", retry)
	case w.short >= flapCount:
		if w.warnedOut {
			b.log.Debug("upstream connection lost", "err", err, "retry_in", retry)
			return
		}
		w.warnedOut = true
		b.log.Warn(fmt.Sprintf("upstream closed the connection right after accepting it, %d times in a row: another client may be using the same client id %q (is gateway.id unique?), or the upstream refuses what the gateway sends (see its log)", w.short, b.clientID),
			"err", err, "retry_in", retry)
	case r != nil:
		b.log.Warn(r.Error(), "retry_in", retry)
	default:
		b.log.Warn("upstream connection lost", "err", err, "retry_in", retry)
	}
}

// ConnectHint says what to check when the upstream cannot be reached or
// its TLS handshake fails, or "" when there is nothing to add.
func ConnectHint(err error) string {
	var (
		dns      *net.DNSError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		record   tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &dns):
		return "the host name in bridge.upstream.url does not resolve: check its spelling and the DNS of this machine"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "nothing listens on that host and port: check the port in bridge.upstream.url (1883 mqtt, 8883 mqtts)"
	case errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EHOSTUNREACH):
		return "no route to the upstream: check this machine's network"
	case errors.As(err, &unknown):
		return "the upstream's certificate is signed by a CA this machine does not trust: set bridge.upstream.tls.ca_file"
	case errors.As(err, &hostname):
		return "the upstream's certificate is for another name: check the host in bridge.upstream.url or set bridge.upstream.tls.server_name"
	case errors.As(err, &invalid) && (invalid.Reason == x509.Expired):
		return "the certificate is expired or not yet valid: check this machine's clock (a Pi has no RTC) or renew the certificate"
	case errors.As(err, &record),
		strings.Contains(err.Error(), "handshake") && (errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)):
		return "the upstream does not speak TLS on that port: use mqtt:// or the broker's TLS port"
	case strings.HasPrefix(err.Error(), "connect: ") && (errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)):
		return "the upstream closed the connection instead of answering the MQTT CONNECT: a TLS port needs mqtts://; otherwise see the upstream's log"
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded):
		return "no answer within bridge.upstream.connect_timeout: a firewall, or the wrong host or port"
	}
	return ""
}
