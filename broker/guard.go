package broker

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/time/rate"
)

// This file holds the broker's defences against hostile or broken clients
// that are not about delivery: who may connect (credentials, throttling,
// session ownership, the will), how refusals are answered and how they are
// logged. The policy hook calls into it; the guard hook carries the packet
// rewrites.

// keyed is a set of token buckets, one per key (a client id, an address, a
// username), created on first use. It holds at most maxKeys buckets: when
// full, buckets that are full again (idle keys) are dropped, and if none
// is, the whole set is reset, so an attacker inventing keys costs memory
// only up to that bound. Safe for concurrent use.
type keyed struct {
	mu      sync.Mutex
	every   rate.Limit
	burst   int
	maxKeys int
	m       map[string]*keyedEntry
}

type keyedEntry struct {
	lim        *rate.Limiter
	suppressed int // events refused since the last allowed one
}

func newKeyed(every rate.Limit, burst, maxKeys int) *keyed {
	return &keyed{every: every, burst: burst, maxKeys: maxKeys, m: map[string]*keyedEntry{}}
}

func (k *keyed) entry(key string, now time.Time) *keyedEntry {
	e, ok := k.m[key]
	if !ok {
		if len(k.m) >= k.maxKeys {
			for kk, ee := range k.m {
				if ee.lim.TokensAt(now) >= float64(k.burst) && ee.suppressed == 0 {
					delete(k.m, kk)
				}
			}
			if len(k.m) >= k.maxKeys {
				clear(k.m)
			}
		}
		e = &keyedEntry{lim: rate.NewLimiter(k.every, k.burst)}
		k.m[key] = e
	}
	return e
}

// allow takes a token for key. It returns whether the event may go ahead
// and, when it may, how many events of key were refused since the last one
// that went ahead.
func (k *keyed) allow(key string) (ok bool, suppressed int) {
	now := time.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	e := k.entry(key, now)
	if !e.lim.AllowN(now, 1) {
		e.suppressed++
		return false, 0
	}
	suppressed, e.suppressed = e.suppressed, 0
	return true, suppressed
}

// exhausted reports whether key has no token left, without taking one.
func (k *keyed) exhausted(key string) bool {
	now := time.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	e, ok := k.m[key]
	return ok && e.lim.TokensAt(now) < 1
}

// take takes a token for key if there is one.
func (k *keyed) take(key string) {
	now := time.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	k.entry(key, now).lim.AllowN(now, 1)
}

// gates bounds the logins in progress per key (an address, a username) to
// loginConcurrency; further ones wait their turn. An entry exists only
// while a login holds or waits for it, so the map is bounded by the
// connections. Safe for concurrent use.
type gates struct {
	mu sync.Mutex
	m  map[string]*gate
}

type gate struct {
	users int           // logins holding or waiting for the gate
	slots chan struct{} // capacity loginConcurrency
}

// acquire waits for a slot of key; ok is false when stop closed first.
func (g *gates) acquire(key string, stop <-chan struct{}) (release func(), ok bool) {
	g.mu.Lock()
	if g.m == nil {
		g.m = map[string]*gate{}
	}
	e := g.m[key]
	if e == nil {
		e = &gate{slots: make(chan struct{}, loginConcurrency)}
		g.m[key] = e
	}
	e.users++
	g.mu.Unlock()
	leave := func() {
		g.mu.Lock()
		if e.users--; e.users == 0 {
			delete(g.m, key)
		}
		g.mu.Unlock()
	}
	select {
	case e.slots <- struct{}{}:
		return func() { <-e.slots; leave() }, true
	case <-stop:
		leave()
		return nil, false
	}
}

// Refusal log lines are rate-limited per client id — logBurst lines at
// once, then one per logEvery — and per remote address, where many clients
// may share one (addrLogBurst at once, then addrLogRate a second); the next
// line that goes out says how many were left out.
const (
	logEvery     = 10 * time.Second
	logBurst     = 5
	addrLogBurst = 30
	addrLogRate  = 2
)

// refusal logs one line for a refused client action, rate-limited per
// client and per address (see logEvery). The line is the message followed by
// the fields, key=value, values quoted when needed; it never holds a payload.
func (b *Broker) refusal(client, addr, msg string, fields ...string) {
	ok1, n1 := b.refusals.allow(client)
	ok2, n2 := b.refusalsAddr.allow(hostOf(addr))
	if !ok1 || !ok2 {
		return
	}
	var sb strings.Builder
	sb.WriteString(msg)
	for i := 0; i+1 < len(fields); i += 2 {
		if fields[i] == "" { // a trailing "(reason)"
			fmt.Fprintf(&sb, " (%s)", fields[i+1])
			continue
		}
		if i == 0 {
			sb.WriteString(": ")
		} else {
			sb.WriteByte(' ')
		}
		sb.WriteString(fields[i])
		sb.WriteByte('=')
		sb.WriteString(logValue(fields[i+1]))
	}
	if n := max(n1, n2); n > 0 {
		fmt.Fprintf(&sb, " [%d similar lines suppressed]", n)
	}
	b.log.Warn(sb.String())
}

// logValue quotes v when it is empty, long, or holds spaces, quotes, '=' or
// unprintable characters (client ids and topics are chosen by clients), and
// cuts it to 200 bytes.
func logValue(v string) string {
	const maxLen = 200
	if len(v) > maxLen {
		v = v[:maxLen] + "…"
	}
	if v == "" || strings.IndexFunc(v, func(r rune) bool {
		return r == ' ' || r == '"' || r == '=' || r == '\\' || !unicode.IsPrint(r)
	}) >= 0 {
		return strconv.Quote(v)
	}
	return v
}

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// Login throttling: failed logins are limited per remote address (not for
// 127.0.0.1 and ::1, the gateway's own processes) and per username. Each key
// may fail loginBurst times at once, then once per loginEvery; while a key
// is out of tokens, its CONNECTs are refused without the bcrypt comparison
// (which is what costs CPU), so guessing is limited to one password per
// loginEvery per address and per username, and cannot occupy the cores. A
// refused or failed login is answered after loginDelay.
const (
	loginEvery = time.Second
	loginBurst = 10
	loginDelay = time.Second
	// loginConcurrency is how many logins of one address or one username
	// are checked at once.
	loginConcurrency = 2
)

// login authenticates a CONNECT (the policy's OnConnectAuthenticate), then
// checks what the client asks for on connecting: its client id's session
// must belong to the same user, and its will must be a topic it may publish
// to. A refusal is logged (rate-limited) and its CONNACK reason recorded for
// the guard hook, which writes it in place of mochi's "bad username or
// password".
func (b *Broker) login(cl *mqtt.Client, pk packets.Packet) bool {
	user := string(pk.Connect.Username)
	addr := cl.Net.Remote
	host := hostOf(addr)
	refuse := func(code packets.Code, why string, fields ...string) bool {
		b.connackCodes.Store(cl.Net.Conn, code)
		f := append([]string{"user", user, "client", cl.ID, "addr", addr}, fields...)
		b.refusal(cl.ID, addr, "login failed", append(f, "", why)...)
		return false
	}
	plan := b.auth.Load()
	// Logins of one address and of one username run loginConcurrency at
	// a time (the others wait), so concurrent guesses cannot all pass the
	// throttle check before the first of them has failed.
	var keys []string
	if host != "127.0.0.1" && host != "::1" {
		keys = append(keys, "a:"+host)
	}
	if user != "" {
		keys = append(keys, "u:"+user)
	}
	why, stopping := b.checkPassword(plan, keys, user, pk.Connect.Password)
	switch {
	case stopping:
		return refuse(packets.ErrServerUnavailable, "the broker is stopping")
	case why != "":
		b.authFailures.Add(1)
		b.delayRefusal() // outside the gates: a refused guess does not hold them
		return refuse(packets.ErrBadUsernameOrPassword, why)
	}
	if owner, ok := b.sessionOwner(cl.ID); ok && owner != user {
		b.aclDenied.Add(1)
		return refuse(packets.ErrNotAuthorized, "client id belongs to another user's session")
	}
	if cl.Properties.Will.Flag != 0 {
		topic := cl.Properties.Will.TopicName
		if !validTopicName(topic) {
			return refuse(packets.ErrTopicNameInvalid, "will topic is not a valid topic name", "will", topic)
		}
		if !b.mayPublish(plan, user, cl.ID, topic) {
			b.aclDenied.Add(1)
			return refuse(packets.ErrNotAuthorized, "will topic denied by ACL", "will", topic)
		}
	}
	return true
}

// checkPassword runs the throttle check and the bcrypt comparison holding
// the gates of keys; why is empty when the password is right.
func (b *Broker) checkPassword(plan *authPlan, keys []string, user string, password []byte) (why string, stopping bool) {
	for _, key := range keys { // always in this order: no deadlock
		release, ok := b.loginGates.acquire(key, b.stopping)
		if !ok {
			return "", true
		}
		defer release()
	}
	for _, key := range keys {
		if b.failedLogins.exhausted(key) {
			return "too many failed logins, throttled", false
		}
	}
	if plan.authenticate(user, password) {
		return "", false
	}
	for _, key := range keys {
		b.failedLogins.take(key)
	}
	switch {
	case user == "":
		return "anonymous access is off", false
	case plan.users[user] == nil:
		return "unknown user", false
	}
	return "bad password", false
}

// delayRefusal holds a refused login for loginDelay (less if the broker
// stops), so one connection cannot guess quickly.
func (b *Broker) delayRefusal() {
	t := time.NewTimer(loginDelay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-b.stopping:
	}
}

// sessionOwner returns the username that holds the session of client id
// (connected, or persistent and disconnected), if there is one.
//
// A session belongs to the user that created it: a client of another user
// (or an anonymous one) that connects with that client id is refused with
// "not authorized" rather than given a fresh session, because a fresh
// session would still have to end the owner's connection and discard its
// queued messages — any user could then cut off any other by guessing its
// client id. The cost is that a client id taken by one user stays
// unavailable to others until that session ends or expires
// (limits.max_session_expiry); the refusal is logged with both names.
func (b *Broker) sessionOwner(id string) (string, bool) {
	srv := b.srv.Load()
	if srv == nil {
		return "", false
	}
	old, ok := srv.Clients.Get(id)
	if !ok || old.Net.Inline {
		return "", false
	}
	if old.Closed() && old.IsTakenOver() {
		return "", false
	}
	return string(old.Properties.Username), true
}

// mayPublish reports whether the client may publish on topic.
func (b *Broker) mayPublish(p *authPlan, user, clientID, topic string) bool {
	return p.allowed(user, clientID, topic, true) && !b.ownedDenied(p, user, clientID, topic)
}

// validTopicName reports whether t is a valid MQTT topic name (not empty,
// no wildcards, no NUL) [MQTT-4.7.3-1] [MQTT-3.3.2-2].
func validTopicName(t string) bool {
	return t != "" && !strings.ContainsAny(t, "+#\x00")
}

// deniedWillTopic is where a will that its client may no longer publish
// (the ACL changed while it was connected) is diverted to: a $ topic that no
// wildcard matches [MQTT-4.7.2-1] and no network client may subscribe to,
// since mochi publishes whatever will OnWill returns.
const deniedWillTopic = "$fieldgate/denied-will"

// checkWill is called when a will is about to be published: a will its
// client may not publish under the ACL in force now is diverted to
// deniedWillTopic, not retained, without payload, and logged.
func (b *Broker) checkWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, bool) {
	user := string(cl.Properties.Username)
	if validTopicName(will.TopicName) && b.mayPublish(b.auth.Load(), user, cl.ID, will.TopicName) {
		return will, true
	}
	b.aclDenied.Add(1)
	b.refusal(cl.ID, cl.Net.Remote, "will denied by ACL", "user", user, "client", cl.ID, "topic", will.TopicName, "", "not published")
	return mqtt.Will{TopicName: deniedWillTopic}, false
}

// guard is a second mochi hook beside policy, for packet rewrites that are
// about protocol correctness rather than delivery.
type guard struct {
	mqtt.HookBase
	b *Broker
}

func (g *guard) ID() string { return "fieldgate-guard" }

func (g *guard) Provides(b byte) bool {
	switch b {
	case mqtt.OnPacketEncode, mqtt.OnPacketRead, mqtt.OnSubscribed, mqtt.OnSessionEstablish:
		return true
	}
	return false
}

// OnPacketEncode puts the reason recorded by login into a refusing CONNACK,
// and gives MQTT 3.1.1 clients 3.1.1 return codes: mochi sends MQTT 5 codes
// (0x80, 0x82, …) that 3.1.1 does not define. A refusal 3.1.1 has no code
// for (a malformed or invalid CONNECT) closes the connection without a
// CONNACK, as 3.1.1 requires for a protocol violation [MQTT-3.1.4-1].
func (g *guard) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type != packets.Connack {
		return pk
	}
	if v, ok := g.b.connackCodes.LoadAndDelete(cl.Net.Conn); ok && pk.ReasonCode != packets.CodeSuccess.Code {
		code := v.(packets.Code)
		pk.ReasonCode = code.Code
		pk.Properties.ReasonString = code.Reason
	}
	if pk.ProtocolVersion < 5 && pk.ReasonCode >= packets.ErrUnspecifiedError.Code {
		if c, ok := v3Connack[pk.ReasonCode]; ok {
			pk.ReasonCode = c
		} else {
			pk.FixedHeader.Type = packets.Reserved // not encodable: nothing is written
		}
	}
	return pk
}

// v3Connack maps MQTT 5 CONNACK reason codes to MQTT 3.1.1 return codes.
var v3Connack = map[byte]byte{
	packets.ErrUnspecifiedError.Code:           packets.Err3ClientIdentifierNotValid.Code, // mochi: empty id without clean session
	packets.ErrUnsupportedProtocolVersion.Code: packets.Err3UnsupportedProtocolVersion.Code,
	packets.ErrClientIdentifierNotValid.Code:   packets.Err3ClientIdentifierNotValid.Code,
	packets.ErrBadUsernameOrPassword.Code:      0x04, // bad user name or password
	packets.ErrNotAuthorized.Code:              packets.Err3NotAuthorized.Code,
	packets.ErrBanned.Code:                     packets.Err3NotAuthorized.Code,
	packets.ErrBadAuthenticationMethod.Code:    packets.Err3NotAuthorized.Code,
	packets.ErrServerUnavailable.Code:          packets.Err3ServerUnavailable.Code,
	packets.ErrServerBusy.Code:                 packets.Err3ServerUnavailable.Code,
	packets.ErrQuotaExceeded.Code:              packets.Err3ServerUnavailable.Code,
	packets.ErrConnectionRateExceeded.Code:     packets.Err3ServerUnavailable.Code,
}

// OnSubscribed logs the filters refused (a reason code of 0x80 or more):
// by the ACL, or not valid filters.
func (g *guard) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	user := string(cl.Properties.Username)
	for i, c := range codes {
		if c < packets.ErrUnspecifiedError.Code || i >= len(pk.Filters) {
			continue
		}
		f := pk.Filters[i].Filter
		if !validFilter(stripShare(f)) {
			g.b.refusal(cl.ID, cl.Net.Remote, "subscription refused", "user", user, "client", cl.ID, "filter", f, "", "not a valid topic filter")
			continue
		}
		g.b.refusal(cl.ID, cl.Net.Remote, "subscription denied by ACL", "user", user, "client", cl.ID, "filter", f)
	}
}

// aclCheck is the policy's OnACLCheck: write is a publish, !write a
// subscription or a delivery. A refused publish is logged (rate-limited);
// a refused subscription is logged by OnSubscribed, a refused delivery not
// at all (a wide subscription with denied parts is legitimate).
func (b *Broker) aclCheck(cl *mqtt.Client, topic string, write bool) bool {
	user := string(cl.Properties.Username)
	plan := b.auth.Load()
	ok := plan.allowed(user, cl.ID, topic, write)
	if ok && !write && strings.HasPrefix(stripShare(topic), "$fieldgate/") {
		ok = false // see deniedWillTopic
	}
	if ok && write && b.ownedDenied(plan, user, cl.ID, topic) {
		b.aclDenied.Add(1)
		b.refusal(cl.ID, cl.Net.Remote, "publish denied by ACL", "user", user, "client", cl.ID, "topic", topic, "", "a device topic, owned by the gateway")
		return false
	}
	if !ok {
		b.aclDenied.Add(1)
		if write {
			b.refusal(cl.ID, cl.Net.Remote, "publish denied by ACL", "user", user, "client", cl.ID, "topic", topic)
		}
	}
	return ok
}

// dropDenied removes from the session that cl resumes the queued messages
// cl may not receive under the ACL in force now (it may have changed since
// they were queued): they are counted as ACL refusals and as dropped, and
// removed from the store. Messages delivered live are checked by mochi.
func (b *Broker) dropDenied(cl *mqtt.Client) {
	srv := b.srv.Load()
	old, ok := srv.Clients.Get(cl.ID)
	if !ok || old.State.Inflight.Len() == 0 {
		return
	}
	plan := b.auth.Load()
	user := string(cl.Properties.Username)
	n := 0
	for _, pk := range old.State.Inflight.GetAll(false) {
		if pk.FixedHeader.Type != packets.Publish || plan.allowed(user, cl.ID, pk.TopicName, false) {
			continue
		}
		if old.State.Inflight.Delete(pk.PacketID) {
			n++
			atomic.AddInt64(&srv.Info.Inflight, -1)
			if b.store != nil {
				b.store.OnQosDropped(old, pk)
			}
		}
	}
	if n > 0 {
		b.aclDenied.Add(int64(n))
		b.refusal(cl.ID, cl.Net.Remote, "queued messages denied by ACL",
			"user", user, "client", cl.ID, "count", strconv.Itoa(n), "", "dropped from the resumed session")
	}
}

// maxRetainedTopic is the longest topic a retained message may have: the
// store (bbolt) cannot hold a longer key, so it would be acknowledged and
// then lost at the next restart.
const maxRetainedTopic = 32000

// OnPacketRead checks what mochi lets through although MQTT calls it
// malformed or a protocol error (the connection is then closed, without a
// CONNACK for a CONNECT, and a line is logged, rate-limited):
//
//   - CONNECT: a will QoS without the will flag [MQTT-3.1.2-11], a will
//     topic with wildcards or that is empty, a password without a username
//     in 3.1.1 [MQTT-3.1.2-22];
//   - PUBLISH: a topic with wildcards [MQTT-3.3.2-2], a retained message
//     whose topic is too long to store;
//   - SUBSCRIBE: an empty filter [MQTT-4.7.3-1], retain handling 3, No
//     Local on a shared subscription [MQTT-3.8.3-4];
//   - any of them: a string with U+0000 or that is not UTF-8 [MQTT-1.5.3-1]
//     [MQTT-1.5.3-2].
//
// A QoS 1/2 publish to $SYS/… is acknowledged (MQTT 5: reason 0x87) and
// dropped; mochi dropped it without an acknowledgement, so the client
// waited for one forever.
func (g *guard) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	var bad string
	switch pk.FixedHeader.Type {
	case packets.Connect:
		c := &pk.Connect
		switch {
		case !c.WillFlag && c.WillQos != 0:
			bad = "will QoS without a will"
		case c.WillFlag && !validTopicName(c.WillTopic) && pk.ProtocolVersion < 5: // MQTT 5: CONNACK 0x90 (login)
			bad = "will topic is not a valid topic name"
		case pk.ProtocolVersion < 5 && c.PasswordFlag && !c.UsernameFlag:
			bad = "password without a user name"
		case !goodString(c.ClientIdentifier) || !goodString(string(c.Username)) || !goodString(c.WillTopic):
			bad = "string with U+0000 or not UTF-8"
		}
	case packets.Publish:
		switch {
		case strings.ContainsAny(pk.TopicName, "+#"):
			bad = "wildcard in a topic name"
		case !goodString(pk.TopicName):
			bad = "topic with U+0000 or not UTF-8"
		case pk.FixedHeader.Retain && len(pk.TopicName) > maxRetainedTopic:
			bad = fmt.Sprintf("retained message with a %d-byte topic (at most %d can be stored)", len(pk.TopicName), maxRetainedTopic)
		case pk.FixedHeader.Qos > 0 && len(pk.TopicName) >= 4 && strings.EqualFold(pk.TopicName[:4], "$SYS"):
			g.b.aclDenied.Add(1)
			g.b.refusal(cl.ID, cl.Net.Remote, "publish denied", "user", string(cl.Properties.Username), "client", cl.ID, "topic", pk.TopicName, "", "$SYS topics are the broker's")
			ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID}
			if pk.FixedHeader.Qos == 2 {
				ack.FixedHeader.Type = packets.Pubrec
			}
			if cl.Properties.ProtocolVersion == 5 {
				ack.ReasonCode = packets.ErrNotAuthorized.Code
				if pk.FixedHeader.Qos == 2 {
					ack.FixedHeader.Type = packets.Pubrec // a reason ≥ 0x80 ends the QoS 2 flow
				}
			}
			_ = cl.WritePacket(ack)
			return pk, nil // mochi drops a $SYS publish
		}
	case packets.Subscribe:
		for _, f := range pk.Filters {
			switch {
			case f.Filter == "":
				bad = "empty topic filter"
			case !goodString(f.Filter):
				bad = "topic filter with U+0000 or not UTF-8"
			case f.RetainHandling > 2:
				bad = "retain handling 3"
			case f.NoLocal && strings.HasPrefix(strings.ToLower(f.Filter), "$share/"):
				bad = "No Local on a shared subscription"
			}
		}
	case packets.Unsubscribe:
		for _, f := range pk.Filters {
			if f.Filter == "" || !goodString(f.Filter) {
				bad = "empty topic filter, U+0000 or not UTF-8"
			}
		}
	}
	if bad == "" {
		return pk, nil
	}
	g.b.refusal(cl.ID, cl.Net.Remote, "malformed packet, connection closed",
		"client", cl.ID, "addr", cl.Net.Remote, "packet", packets.PacketNames[pk.FixedHeader.Type], "", bad)
	return pk, packets.ErrRejectPacket
}

// goodString reports whether s is valid UTF-8 without U+0000.
func goodString(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}
