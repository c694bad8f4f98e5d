// Package broker is fieldgate's embedded MQTT broker (MQTT 3.1.1 and 5), built
// on mochi-mqtt: TCP, TLS (optionally with client certificates) and websocket
// listeners, bcrypt users and a per-user ACL, limits, $SYS statistics,
// retained messages and persistent sessions stored under the data directory,
// and an in-process publish/subscribe API with a store-and-forward hook
// (Options.Ingress) that sees every publish before it is acknowledged.
//
// Behaviour notes for operators (where mochi or MQTT leave a choice):
//
//   - A client never holds more unacknowledged QoS 1/2 messages than
//     min(its Receive Maximum, limits.max_inflight); the rest wait in its
//     bounded queue, and publishers wait briefly for a full queue
//     (limits.delivery_wait) before limits.when_queue_full applies (see
//     delivery.go, and why mochi lost messages).
//   - MQTT 3.1.1 clients never receive a DISCONNECT packet (the connection is
//     closed instead), and a CONNECT with a bad protocol name or level that is
//     not MQTT 5 is answered with CONNACK return code 0x01. An MQTT 5 CONNECT
//     with a bad protocol name gets mochi's 0x82.
//   - In-flight messages of a resumed session are resent in their original
//     order. Their MQTT 5 message expiry does not survive a broker restart
//     (mochi's store keeps no expiry time), so after a restart they wait
//     until delivered or the session expires.
//   - Sessions that are persistent (3.1.1 clean session false, MQTT 5 session
//     expiry > 0) write each QoS 1/2 message they receive to the store (one
//     fsync'd transaction to queue it, one to complete it); clean sessions
//     never touch the disk.
//   - The $SYS subscriptions gauge (and Stats.Subscriptions) counts only
//     subscriptions made since the broker started.
//   - limits.max_keepalive is announced to MQTT 5 clients only; MQTT 3.1.1
//     has no way to tell a client, so its requested keepalive stands.
//   - A client that goes silent is disconnected up to 250 ms after its 1.5 ×
//     keepalive has run out, and the acknowledgements (PUBACK, PUBREC, PUBREL,
//     PUBCOMP) for packets that arrived together are written together, at
//     most 1 ms late (see batchConn): one write per batch, not per message.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/time/rate"

	"github.com/fieldgate/fieldgate/internal/durable"
)

// InProcessPrefix starts the Origin of every in-process publish: Publish with
// Origin "devices" delivers with Origin "$inproc/devices". Network clients may
// not use client ids with this prefix (their CONNECT is refused with
// "client identifier not valid"), so an Origin names its publisher uniquely.
const InProcessPrefix = "$inproc/"

// InProcessOrigin returns the Origin that Ingress and subscribers see for an
// in-process publisher called name (InProcessPrefix+name), e.g. for a
// consumer that must recognise the bridge's own publishes.
func InProcessOrigin(name string) string {
	if strings.HasPrefix(name, InProcessPrefix) {
		return name
	}
	return InProcessPrefix + name
}

// ErrQuotaExceeded is returned by an Ingress function when the store-and-
// forward buffer is full and its policy is to reject. See Options.Ingress.
var ErrQuotaExceeded = errors.New("broker: quota exceeded")

// ErrNotRunning is returned by Publish when Run is not serving.
var ErrNotRunning = errors.New("broker: not running")

// Message is one application message as seen by Ingress, in-process
// subscribers and Publish.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	// Origin is the publishing network client's id, or InProcessPrefix plus
	// the in-process publisher's name.
	Origin string
	// Username is the publishing client's username (empty when anonymous,
	// in-process, or unknown).
	Username        string
	ContentType     string
	ResponseTopic   string
	CorrelationData []byte
	UserProperties  []UserProperty
	// MessageExpiry is the MQTT 5 message expiry interval in seconds; 0 = none.
	MessageExpiry uint32
}

// UserProperty is an MQTT 5 user property.
type UserProperty struct{ Key, Value string }

// Options wires the broker into the process.
type Options struct {
	// Version is published on $SYS/broker/version (the gateway's version,
	// not the MQTT library's). Empty: the library's.
	Version string
	// DataDir holds the broker's store (DataDir/broker/broker.db): retained
	// messages and persistent sessions. Required.
	DataDir string
	// Logger receives the broker's logs (scoped component=broker). Required.
	Logger *slog.Logger
	// Ingress, when not nil, is called for every publish — from network
	// clients, in-process Publish, and will messages — after the ACL check
	// and before the publisher is acknowledged or anything is delivered. It
	// queues the message for storage; the broker waits for the returned
	// Stored (the message is durable) before it acknowledges and delivers.
	// It may be called concurrently; for one network client it is called
	// from one goroutine in the order of the client's publishes, and must
	// store them in that order. Outcomes (an error from Ingress or from
	// Stored.Err):
	//
	//   - nil: the message is acknowledged and delivered normally.
	//   - ErrQuotaExceeded: MQTT 5 QoS 1/2 publishers get PUBACK/PUBREC with
	//     reason 0x97 (quota exceeded); nothing is delivered.
	//   - any other error: MQTT 5 QoS 1/2 publishers get reason 0x80
	//     (unspecified error); nothing is delivered.
	//   - on any error, an MQTT 3.1.1 QoS 1/2 publisher (3.1.1 has no negative
	//     acknowledgement) is disconnected without an acknowledgement, so it
	//     re-sends the message after reconnecting; its will is published.
	//   - QoS 0 messages are dropped on error; the connection stays.
	//   - in-process Publish returns the error.
	//   - will messages are published locally whatever Ingress returns (the
	//     error is logged); a delayed will is handed to Ingress when its
	//     client disconnects, even if a reconnect later cancels it.
	//
	// A network client's reading goroutine does not wait for the disk: it
	// goes on reading while earlier messages are being stored (up to
	// limits.receive_maximum of them), so one client's publishes in flight
	// share group commits; acknowledgements and deliveries keep the client's
	// order (see ingressLine).
	Ingress IngressFunc
}

// Stats is a snapshot of broker counters; "total" fields are monotonic over
// the Broker's life, the others are gauges.
type Stats struct {
	ClientsConnected    int64 // network clients connected now
	ClientsMaximum      int64 // most clients connected at once
	Sessions            int64 // sessions known (connected + disconnected persistent)
	MessagesReceived    int64 // total PUBLISH packets received (network and in-process)
	MessagesSent        int64 // total PUBLISH packets sent to clients
	MessagesDropped     int64 // total messages a client's queue or inflight limit refused
	BytesReceived       int64 // total
	BytesSent           int64 // total
	PacketsReceived     int64 // total
	PacketsSent         int64 // total
	Retained            int64 // retained messages held now ($SYS topics not counted)
	Inflight            int64 // QoS 1/2 messages in flight or queued now
	Subscriptions       int64 // network client subscriptions now
	IngressRejected     int64 // total publishes Ingress refused
	AuthFailures        int64 // total CONNECTs refused for bad credentials
	ACLDenied           int64 // total publishes, subscriptions or deliveries the ACL refused
	DeliveryWaits       int64 // total publishes that waited for a slow subscriber
	DeliveryWaitTimeout int64 // total subscribers given up after limits.delivery_wait (once until each catches up)
	SlowDisconnects     int64 // total subscribers disconnected by limits.when_queue_full: disconnect
}

// Broker is the embedded MQTT broker. Create it with New, serve with Run
// (once). Publish, Subscribe, SetAuth, Stats, Ready and Addrs are safe for
// concurrent use.
type Broker struct {
	cfg     Config
	log     *slog.Logger
	dataDir string
	version string // for $SYS/broker/version
	ingress IngressFunc
	lines   sync.Map  // *mqtt.Client → *ingressLine
	entries sync.Pool // *ingested, recycled by the ingress lines
	twins   sync.Pool // *mqtt.Client, see deliverAs
	auth    atomic.Pointer[authPlan]
	ready   chan struct{}

	srv atomic.Pointer[mqtt.Server] // set by Run; kept afterwards for Stats

	mu        sync.Mutex
	started   bool
	addrs     []net.Addr
	listeners []*listener
	subs      map[int]*inprocSub
	nextSub   int
	subsLive  bool // in-process subscriptions are installed in srv
	origins   map[string]*mqtt.Client
	stopping  chan struct{} // closed when Run begins shutting down

	// Publish calls in progress; Run waits for them before closing the store.
	pubMu   sync.Mutex
	pubCond *sync.Cond
	pubs    int
	running bool

	rooms roomCache
	flows sync.Map // *mqtt.Client → *flow, for connected network clients
	conns sync.Map // net.Conn → *mqtt.Client, to drop the flows' entries

	ingressRejected, authFailures, aclDenied, deliveryWaits, deliveryTimeouts, slowDisconnects atomic.Int64

	refusals     *keyed                              // refusal log lines, per client (guard.go)
	refusalsAddr *keyed                              // and per remote address
	failedLogins *keyed                              // failed logins, per address and username
	connackCodes sync.Map                            // net.Conn → packets.Code, the reason of a refused CONNECT
	store        *persistHook                        // set by Run before serving
	owned        atomic.Pointer[map[string]struct{}] // topics owned by in-process publishers (owned.go)

	pending      sync.Map     // net.Conn → func(), for connections before their CONNECT completed
	pendingCount atomic.Int64 // their number
	connRate     *keyed       // new connections per remote address
	loginGates   gates        // logins in progress per address and username (guard.go)
}

type inprocSub struct {
	filter string
	fn     func(Message)
}

// New validates cfg (after filling its defaults) and wires a Broker. It starts
// nothing and touches no files.
func New(cfg Config, opts Options) (*Broker, error) {
	if opts.Logger == nil {
		return nil, errors.New("broker: Options.Logger is required")
	}
	if opts.DataDir == "" {
		return nil, errors.New("broker: Options.DataDir is required")
	}
	cfg.Listeners = append([]ListenerConfig(nil), cfg.Listeners...)
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("broker config: %w", err)
	}
	b := &Broker{
		cfg:      cfg,
		log:      opts.Logger.With("component", "broker"),
		dataDir:  opts.DataDir,
		version:  opts.Version,
		ingress:  opts.Ingress,
		ready:    make(chan struct{}),
		subs:     map[int]*inprocSub{},
		origins:  map[string]*mqtt.Client{},
		stopping: make(chan struct{}),

		refusals:     newKeyed(rate.Every(logEvery), logBurst, 10000),
		refusalsAddr: newKeyed(addrLogRate, addrLogBurst, 10000),
		failedLogins: newKeyed(rate.Every(loginEvery), loginBurst, 10000),
		connRate:     newKeyed(rate.Limit(cfg.Limits.ConnectRate), 2*cfg.Limits.ConnectRate, 10000),
	}
	b.pubCond = sync.NewCond(&b.pubMu)
	b.auth.Store(compileAuth(cfg.Auth))
	return b, nil
}

// Ready is closed once the store is open and every listener is bound. It is
// never closed when Run fails before that, so wait on Run's result too.
func (b *Broker) Ready() <-chan struct{} { return b.ready }

// Addrs returns the bound listener addresses in configuration order; nil
// before Ready.
func (b *Broker) Addrs() []net.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]net.Addr(nil), b.addrs...)
}

// Run opens the store, binds every listener (failing if any cannot be bound),
// serves until ctx is done, then disconnects clients, closes listeners and
// the store, and returns once every goroutine it started has returned. Run
// may be called once. If a listener stops accepting on its own (its socket
// failed; running out of descriptors is waited out), Run stops the same way
// and returns that error.
func (b *Broker) Run(ctx context.Context) error {
	b.mu.Lock()
	if b.started {
		b.mu.Unlock()
		return errors.New("broker: Run called twice")
	}
	b.started = true
	b.mu.Unlock()

	dir := filepath.Join(b.dataDir, "broker")
	if err := durable.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("broker: create data dir: %w", err)
	}

	watch := newLoopWatch(b.log.Handler())
	srv := mqtt.New(&mqtt.Options{
		Capabilities:             b.capabilities(),
		Logger:                   slog.New(watch),
		SysTopicResendInterval:   int64(b.cfg.SysInterval / time.Second),
		InlineClient:             true,
		ClientNetWriteBufferSize: writeBufferSize(),
	})
	if b.version != "" {
		srv.Info.Version = b.version
	}
	b.srv.Store(srv)

	if err := srv.AddHook(&policy{b: b}, nil); err != nil {
		return fmt.Errorf("broker: add policy hook: %w", err)
	}
	if err := srv.AddHook(&guard{b: b}, nil); err != nil {
		return fmt.Errorf("broker: add guard hook: %w", err)
	}
	if err := b.openStore(srv, filepath.Join(dir, "broker.db")); err != nil {
		return err
	}

	ls := make([]*listener, 0, len(b.cfg.Listeners))
	for i, lc := range b.cfg.Listeners {
		l, err := bindListener(fmt.Sprintf("%s-%d", lc.Type, i), lc, b.log)
		if err != nil {
			shutdownListeners(ls)
			_ = srv.Close()
			return fmt.Errorf("broker: %w", err)
		}
		l.refused = func(addr, origin string) {
			b.refusal("", addr, "websocket connection refused", "addr", addr, "origin", origin, "", "origin not in allowed_origins")
		}
		ls = append(ls, l)
	}
	if err := srv.Serve(); err != nil { // loads the store, starts mochi's event loop
		shutdownListeners(ls)
		_ = srv.Close()
		return fmt.Errorf("broker: start: %w", err)
	}

	b.mu.Lock()
	for _, l := range ls {
		b.addrs = append(b.addrs, l.ln.Addr())
	}
	b.listeners = ls
	pending := make(map[int]*inprocSub, len(b.subs))
	for id, s := range b.subs {
		pending[id] = s
	}
	b.subsLive = true
	b.mu.Unlock()
	for id, s := range pending {
		b.installSub(srv, id, s)
	}
	b.pubMu.Lock()
	b.running = true
	b.pubMu.Unlock()

	// A listener that stops accepting on its own ends Run with its error:
	// a broker that can take no connection is failed, not running.
	lnFailed := make(chan error, 1)
	reportLn := func(err error) {
		select {
		case lnFailed <- err:
		default: // another one failed first
		}
	}
	for _, l := range ls {
		l.start(func(id string, c net.Conn) error {
			release, ok := b.admit(c) // admit.go
			if !ok {
				return nil
			}
			bc := newBatchConn(c)
			b.pending.Store(bc, release)
			_ = bc.SetDeadline(time.Now().Add(b.cfg.Limits.ConnectTimeout))
			defer b.connDone(bc)
			return srv.EstablishConnection(id, bc)
		}, reportLn)
		b.log.Info("listening", "type", l.kind, "address", l.ln.Addr().String())
	}
	b.warnAnonymous(b.auth.Load())
	close(b.ready)

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-lnFailed:
		runErr = fmt.Errorf("broker: %w", err)
	}

	close(b.stopping) // wakes publishes waiting for slow subscribers
	b.pubMu.Lock()
	b.running = false
	for b.pubs > 0 { // in-process Publish calls finish before the store closes
		b.pubCond.Wait()
	}
	b.pubMu.Unlock()
	for _, l := range ls {
		l.stopAccepting()
	}
	for _, cl := range srv.Clients.GetAll() {
		if !cl.Net.Inline && cl.Net.Conn != nil && !cl.Closed() {
			_ = srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
		}
	}
	for _, l := range ls {
		l.closeConns()
	}
	watch.closing.Store(true)
	_ = srv.Close() // stops hooks: closes the store
	<-watch.halted  // mochi's event loop goroutine has returned
	b.log.Info("stopped")
	return runErr
}

// connDone forgets a finished connection's client state; mochi does not
// call OnDisconnect when a connection fails between authentication and
// CONNACK.
func (b *Broker) connDone(c net.Conn) {
	b.connackCodes.Delete(c)
	b.connected(c)
	if cl, ok := b.conns.LoadAndDelete(c); ok {
		b.closeLine(cl.(*mqtt.Client))
		b.endFlow(cl.(*mqtt.Client))
	}
}

func (b *Broker) capabilities() *mqtt.Capabilities {
	l := b.cfg.Limits
	c := mqtt.NewDefaultServerCapabilities()
	c.MaximumClients = int64(l.MaxClients)
	c.MaximumPacketSize = uint32(l.MaxPacketSize)
	c.ReceiveMaximum = uint16(l.ReceiveMaximum)
	// A QoS 1/2 message gets its packet id, in mochi's in-flight map, when
	// it is queued (see delivery.go): the map holds the window, the write
	// queue and the one message the write loop holds, and mochi drops only
	// beyond that (or for an offline session that holds that many).
	c.MaximumClientWritesPending = int32(l.MaxQueuedMessages + l.MaxInflight)
	c.MaximumInflight = uint16(min(l.MaxInflight+int(c.MaximumClientWritesPending)+1, math.MaxUint16))
	c.MaximumSessionExpiryInterval = uint32(*l.MaxSessionExpiry / time.Second)
	c.MaximumMessageExpiryInterval = int64(l.MaxMessageExpiry / time.Second)
	c.TopicAliasMaximum = uint16(*l.TopicAliasMaximum)
	c.Compatibilities.NoInheritedPropertiesOnAck = true // no user properties on PUBACK/PUBREC/PUBCOMP
	return c
}

func (b *Broker) warnAnonymous(p *authPlan) {
	if !p.anonymous {
		return
	}
	for _, a := range b.Addrs() {
		if ta, ok := a.(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
			b.log.Warn("anonymous access is enabled on a non-loopback listener: any host that can reach it may publish and subscribe",
				"address", a.String())
		}
	}
}

// SetAuth validates and installs new users and ACL on the running (or not yet
// running) broker. Connected clients stay connected; their next publish,
// subscription and delivery are checked against the new ACL.
func (b *Broker) SetAuth(a AuthConfig) error {
	if errs := a.validate("auth"); len(errs) > 0 {
		return fmt.Errorf("broker auth: %w", errors.Join(errs...))
	}
	p := compileAuth(a)
	b.auth.Store(p)
	b.warnAnonymous(p)
	return nil
}

// Publish publishes m from inside the process as if a client had sent it:
// through Ingress first (its error is returned and nothing is delivered),
// then to matching subscribers, retained if m.Retain. m.Origin names the
// publisher ("devices", "bridge"; default "local") and is delivered as
// InProcessPrefix+name. It returns once the message is queued to every
// subscriber (in-process subscribers have run); it may wait for a
// subscriber whose queue is full as a network publish does, at most
// limits.delivery_wait. ctx is checked before publishing; a publish that
// has started runs to completion.
func (b *Broker) Publish(ctx context.Context, m Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if m.QoS > 2 {
		return fmt.Errorf("broker publish %s: bad qos %d", m.Topic, m.QoS)
	}
	if m.Topic == "" || strings.ContainsAny(m.Topic, "+#\x00") {
		return fmt.Errorf("broker publish %q: invalid topic name", m.Topic)
	}
	if m.Origin == "" {
		m.Origin = "local"
	}
	m.Origin = InProcessOrigin(m.Origin)
	m.Username = ""

	b.pubMu.Lock()
	if !b.running {
		b.pubMu.Unlock()
		return ErrNotRunning
	}
	b.pubs++
	b.pubMu.Unlock()
	defer func() {
		b.pubMu.Lock()
		b.pubs--
		b.pubCond.Broadcast()
		b.pubMu.Unlock()
	}()
	if b.ingress != nil {
		if err := b.ingestSync(&m); err != nil {
			b.ingressRejected.Add(1)
			return fmt.Errorf("broker publish %s: %w", m.Topic, err)
		}
	}
	srv := b.srv.Load()
	cl := b.originClient(srv, m.Origin)
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: m.QoS, Retain: m.Retain},
		TopicName:   m.Topic,
		Payload:     m.Payload,
		Properties: packets.Properties{
			ContentType:           m.ContentType,
			ResponseTopic:         m.ResponseTopic,
			CorrelationData:       m.CorrelationData,
			MessageExpiryInterval: m.MessageExpiry,
		},
	}
	if m.QoS > 0 {
		pk.PacketID = 1 // required by validation; in-process publishes complete immediately
	}
	for _, u := range m.UserProperties {
		pk.Properties.User = append(pk.Properties.User, packets.UserProperty{Key: u.Key, Val: u.Value})
	}
	if err := srv.InjectPacket(cl, pk); err != nil {
		return fmt.Errorf("broker publish %s: %w", m.Topic, err)
	}
	return nil
}

// originClient returns the inline mochi client publishing for origin.
func (b *Broker) originClient(srv *mqtt.Server, origin string) *mqtt.Client {
	b.mu.Lock()
	defer b.mu.Unlock()
	cl, ok := b.origins[origin]
	if !ok {
		cl = srv.NewClient(nil, mqtt.LocalListener, origin, true)
		cl.Properties.ProtocolVersion = 5 // keep MQTT 5 properties and expiry
		b.origins[origin] = cl
	}
	return cl
}

// Subscribe registers fn for messages matching filter (wildcards and
// $share/... allowed) and returns a function that removes it. Retained
// messages matching filter are delivered to fn before Subscribe returns
// (when the broker is running; otherwise when Run starts). fn is called
// synchronously in the publisher's goroutine and must not block for long;
// it is never called concurrently with itself for the same publisher, but
// may be for different publishers. The ACL does not apply to in-process
// subscribers.
func (b *Broker) Subscribe(filter string, fn func(Message)) (unsubscribe func(), err error) {
	if fn == nil {
		return nil, errors.New("broker subscribe: nil handler")
	}
	if !validFilter(stripShare(filter)) {
		return nil, fmt.Errorf("broker subscribe %q: invalid topic filter", filter)
	}
	b.mu.Lock()
	b.nextSub++
	id := b.nextSub
	s := &inprocSub{filter: filter, fn: fn}
	b.subs[id] = s
	live := b.subsLive
	b.mu.Unlock()
	if live {
		b.installSub(b.srv.Load(), id, s)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			delete(b.subs, id)
			live := b.subsLive
			b.mu.Unlock()
			if live {
				_ = b.srv.Load().Unsubscribe(filter, id)
			}
		})
	}, nil
}

// installSub adds an in-process subscription to srv; retained messages are
// delivered to it now, so b.mu must not be held.
func (b *Broker) installSub(srv *mqtt.Server, id int, s *inprocSub) {
	err := srv.Subscribe(s.filter, id, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		m := messageFrom(pk)
		if cl, ok := srv.Clients.Get(pk.Origin); ok {
			m.Username = string(cl.Properties.Username)
		}
		s.fn(m)
	})
	if err != nil { // the filter was validated in Subscribe
		b.log.Error("in-process subscribe failed", "filter", s.filter, "error", err)
	}
}

func messageFrom(pk packets.Packet) Message {
	m := Message{
		Topic:           pk.TopicName,
		Payload:         pk.Payload,
		QoS:             pk.FixedHeader.Qos,
		Retain:          pk.FixedHeader.Retain,
		Origin:          pk.Origin,
		ContentType:     pk.Properties.ContentType,
		ResponseTopic:   pk.Properties.ResponseTopic,
		CorrelationData: pk.Properties.CorrelationData,
		MessageExpiry:   pk.Properties.MessageExpiryInterval,
	}
	for _, u := range pk.Properties.User {
		m.UserProperties = append(m.UserProperties, UserProperty{Key: u.Key, Value: u.Val})
	}
	return m
}

// Stats returns a snapshot of the broker's counters.
func (b *Broker) Stats() Stats {
	st := Stats{
		IngressRejected:     b.ingressRejected.Load(),
		AuthFailures:        b.authFailures.Load(),
		ACLDenied:           b.aclDenied.Load(),
		DeliveryWaits:       b.deliveryWaits.Load(),
		DeliveryWaitTimeout: b.deliveryTimeouts.Load(),
		SlowDisconnects:     b.slowDisconnects.Load(),
	}
	srv := b.srv.Load()
	if srv == nil {
		return st
	}
	in := srv.Info.Clone()
	st.ClientsConnected = in.ClientsConnected
	st.ClientsMaximum = in.ClientsMaximum
	st.Sessions = int64(srv.Clients.Len()) - 1 // minus mochi's own inline client
	st.MessagesReceived = in.MessagesReceived
	st.MessagesSent = in.MessagesSent
	st.MessagesDropped = in.MessagesDropped + in.InflightDropped
	st.BytesReceived = in.BytesReceived
	st.BytesSent = in.BytesSent
	st.PacketsReceived = in.PacketsReceived
	st.PacketsSent = in.PacketsSent
	for topic := range srv.Topics.Retained.GetAll() {
		if !strings.HasPrefix(topic, "$SYS/") {
			st.Retained++
		}
	}
	st.Inflight = in.Inflight
	st.Subscriptions = in.Subscriptions
	return st
}

// loopWatch is the slog handler given to mochi. It lowers mochi's chatty Info
// lines to Debug and notices when mochi's event loop goroutine (started by
// Serve and not waited for by Close) has returned, from its last log line (a
// Debug line, let through once closing is set: mochi logs a Debug line for
// every publish a hook refuses, too costly to build for nothing).
//
// It also keeps what clients send out of the log: mochi attaches whole
// packets (payload included) and wills to some lines; those attributes are
// dropped, and its warnings and errors are rate-limited per client (see
// logEvery), so a client sending bad packets in a loop cannot flood the
// journal. Its warning about a short keepalive, logged before the client is
// authenticated, is lowered to Debug.
type loopWatch struct {
	slog.Handler
	halted  chan struct{}
	once    *sync.Once
	closing *atomic.Bool
	lines   *keyed
}

const loopHaltedMsg = "system event loop halted"

func newLoopWatch(h slog.Handler) *loopWatch {
	return &loopWatch{Handler: h, halted: make(chan struct{}), once: new(sync.Once), closing: new(atomic.Bool),
		lines: newKeyed(rate.Every(logEvery), logBurst, 10000)}
}

func (w *loopWatch) Enabled(ctx context.Context, l slog.Level) bool {
	return (l == slog.LevelDebug && w.closing.Load()) || w.Handler.Enabled(ctx, l)
}

// mochiDumps are the attribute keys under which mochi logs packets and wills.
var mochiDumps = map[string]bool{"pk": true, "packet": true, "will": true, "cl": true}

func (w *loopWatch) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == loopHaltedMsg {
		w.once.Do(func() { close(w.halted) })
	}
	if r.Level == slog.LevelInfo || r.Message == mqtt.ErrMinimumKeepalive.Error() || deniedByACL(r) {
		r.Level = slog.LevelDebug
	}
	if !w.Handler.Enabled(ctx, r.Level) {
		return nil
	}
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	client := ""
	r.Attrs(func(a slog.Attr) bool {
		switch {
		case mochiDumps[a.Key]:
		case a.Key == "client":
			client = a.Value.String()
			out.AddAttrs(slog.String("client", logValue(client)))
		case a.Value.Kind() == slog.KindString:
			out.AddAttrs(slog.String(a.Key, logValue(a.Value.String())))
		default:
			out.AddAttrs(a)
		}
		return true
	})
	if r.Level >= slog.LevelWarn {
		ok, n := w.lines.allow(client)
		if !ok {
			return nil
		}
		if n > 0 {
			out.AddAttrs(slog.Int("suppressed", n))
		}
	}
	return w.Handler.Handle(ctx, out)
}

// deniedByACL reports mochi's line for a connection it ends after an ACL
// refusal, which the policy has logged already.
func deniedByACL(r slog.Record) bool {
	denied := false
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "error" && a.Value.String() == packets.ErrNotAuthorized.Reason {
			denied = true
			return false
		}
		return true
	})
	return denied
}

func (w *loopWatch) WithAttrs(a []slog.Attr) slog.Handler {
	return &loopWatch{Handler: w.Handler.WithAttrs(a), halted: w.halted, once: w.once, closing: w.closing, lines: w.lines}
}

func (w *loopWatch) WithGroup(g string) slog.Handler {
	return &loopWatch{Handler: w.Handler.WithGroup(g), halted: w.halted, once: w.once, closing: w.closing, lines: w.lines}
}

// openStore adds the persistence hook on path. A store that cannot be opened
// (corrupt or truncated, G7) is moved aside to path.corrupt-<UTC time> with
// one error log line, and a fresh one is opened: retained messages and
// persistent sessions are lost, acknowledged bridge data (in the buffer) is
// not, and the gateway starts.
func (b *Broker) openStore(srv *mqtt.Server, path string) error {
	err := b.addStore(srv, path)
	if err == nil {
		return syncStoreDir(path)
	}
	if _, statErr := os.Stat(path); statErr != nil {
		return fmt.Errorf("broker: open store %s: %w", path, err)
	}
	aside := path + ".corrupt-" + time.Now().UTC().Format("20060102T150405Z")
	if rerr := durable.Rename(path, aside); rerr != nil {
		return fmt.Errorf("broker: open store %s: %w (and could not move it aside: %v)", path, err, rerr)
	}
	b.log.Error("broker store is corrupt; moved aside, starting with an empty one (retained messages and sessions lost)",
		"path", path, "moved_to", aside, "err", err)
	if err := b.addStore(srv, path); err != nil {
		return fmt.Errorf("broker: open fresh store %s: %w", path, err)
	}
	return syncStoreDir(path)
}

// syncStoreDir makes the store file's directory entry durable: bbolt
// syncs the file it creates, not its directory, so a power cut could take
// broker.db (with every retained message and session written to it) away.
func syncStoreDir(path string) error {
	if err := durable.SyncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("broker: store %s: %w", path, err)
	}
	return nil
}

// addStore opens the bbolt store, turning a panic inside bbolt on a corrupt
// file into an error.
func (b *Broker) addStore(srv *mqtt.Server, path string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("store panicked: %v", r)
		}
	}()
	h := newPersistHook()
	if err := srv.AddHook(h, path); err != nil {
		return err
	}
	b.store = h
	return nil
}
