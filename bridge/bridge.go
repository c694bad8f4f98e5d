package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/fieldgate/fieldgate/buffer"
)

// Origin is the Origin the bridge sets on messages it publishes locally
// (subscribe routes). Ingest ignores messages with this Origin, so nothing
// that came from upstream is forwarded back up.
const Origin = "bridge"

// Queue is the durable FIFO the bridge appends to and drains; *buffer.Queue
// implements it. Read must return records with Seq > after in Seq order,
// skipping acknowledged ones; Ack may be called out of order.
type Queue interface {
	AppendBatchAsync(data [][]byte) (*buffer.Pending, error)
	Read(after uint64, max int, maxBytes int) ([]buffer.Record, error)
	Notify() <-chan struct{}
	Ack(seqs ...uint64) error
	Stats() buffer.Stats
}

// LocalPublisher publishes into the local broker (subscribe routes). The
// gateway adapts the broker to it.
type LocalPublisher interface {
	Publish(ctx context.Context, m Message) error
}

// Options carries the bridge's collaborators.
type Options struct {
	Gateway string         // the gateway id, {gateway} in templates
	Queue   Queue          // required; opened and closed by the caller
	Local   LocalPublisher // required when there are subscribe routes
	Logger  *slog.Logger   // required
	// DataDir holds the persisted MQTT 5 session (QoS 2 packet identifiers
	// and PUBREL state, G5), in <DataDir>/session. Empty: the session is
	// kept in memory (exactly-once across reconnects, not restarts). MQTT 5
	// only: 3.1.1 connections always start clean.
	DataDir string
	// Dial opens the TCP connection to the upstream (TLS and websocket are
	// layered on top). Default: net.Dialer.DialContext.
	Dial DialFunc
}

// Bridge relays messages between the local broker and one upstream broker.
// Create it with New; Ingest is safe for concurrent use and may be called
// before, during and after Run; Run may be called once.
type Bridge struct {
	cfg      Config
	q        Queue
	local    LocalPublisher
	log      *slog.Logger
	dial     DialFunc
	ep       *endpoint
	gateway  string
	clientID string
	status   string // status topic
	password []byte
	routes   atomic.Pointer[routeSet] // replaced whole by SetRoutes
	sess     *session5                // MQTT 5 session state, shared by successive connections

	live chan Message // unbuffered QoS 0 messages for the current connection

	mu      sync.Mutex
	cur     link // nil when not connected
	state   string
	started bool

	// Drain state, owned by Run's goroutine (no concurrent access).
	cursor     uint64    // last seq handed to the upstream
	maxSent    uint64    // highest seq ever sent (to count resends)
	leftover   []*flight // unacknowledged flights of the previous connection
	firstCon   bool      // a connection has been established in this process
	resume     bool      // the first connection may resume the persisted session
	forceClean bool      // the next connection must start a clean session
	pace       pacer
	watch      linkWatch // what the reconnect loop last logged

	disc atomic.Pointer[RefusedError] // the last DISCONNECT the upstream sent

	st counters
}

type fwdRoute struct {
	filter, prefix string
	qos            byte
	bufferQoS0     bool
}

type subRoute struct {
	filter, strip, prefix string
	qos                   byte
}

type counters struct {
	connects, connectFailures, stalls     atomic.Uint64
	ingested, rejected, forwarded, resent atomic.Uint64
	live, received                        atomic.Uint64
	dropCorrupt, dropExpired, dropRejectd atomic.Uint64
	dropOffline, dropOverflow, dropLocal  atomic.Uint64
	dropInvalid                           atomic.Uint64
	inflight, window                      atomic.Int64
	inflightBytes                         atomic.Int64  // topic + payload bytes of the messages in flight
	rate                                  atomic.Uint64 // float64 bits
}

// New compiles cfg (call Defaults and Validate first) and reads the
// password and TLS files. It starts nothing.
func New(cfg Config, opts Options) (*Bridge, error) {
	if opts.Queue == nil {
		return nil, errors.New("bridge: Options.Queue is required")
	}
	if opts.Logger == nil {
		return nil, errors.New("bridge: Options.Logger is required")
	}
	if len(cfg.Subscribe) > 0 && opts.Local == nil {
		return nil, errors.New("bridge: Options.Local is required with subscribe routes")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bridge: invalid config: %w", err)
	}
	ep, err := compileEndpoint(cfg.Upstream)
	if err != nil {
		return nil, fmt.Errorf("bridge: %w", err)
	}
	b := &Bridge{
		cfg:      cfg,
		q:        opts.Queue,
		local:    opts.Local,
		log:      opts.Logger.With("component", "bridge"),
		dial:     opts.Dial,
		ep:       ep,
		gateway:  opts.Gateway,
		clientID: expand(cfg.Upstream.ClientID, opts.Gateway),
		status:   expand(cfg.Upstream.StatusTopic, opts.Gateway),
		live:     make(chan Message, 1024),
		state:    "stopped",
		pace:     pacer{msgRate: cfg.ReplayRate.MessagesPerSecond, byteRate: cfg.ReplayRate.BytesPerSecond},
	}
	if b.dial == nil {
		var d net.Dialer
		b.dial = d.DialContext
	}
	if cfg.Upstream.PasswordFile != "" {
		pw, err := os.ReadFile(cfg.Upstream.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("bridge: upstream password_file: %w", err)
		}
		b.password = []byte(strings.TrimSpace(string(pw)))
	}
	b.routes.Store(compileRoutes(cfg.Forward, cfg.Subscribe, opts.Gateway))
	if cfg.Upstream.Protocol == "5" {
		dir := ""
		if opts.DataDir != "" {
			dir = filepath.Join(opts.DataDir, "session")
		}
		if b.sess, err = newSession5(dir); err != nil {
			return nil, fmt.Errorf("bridge: %w", err)
		}
	}
	b.st.window.Store(int64(cfg.Inflight))
	return b, nil
}

// Ingest stores a local publish for the upstream before its publisher is
// acknowledged (G1) and returns once it is durable; the gateway uses
// IngestAsync, which does the same without making its caller wait. For each
// forward route the message matches (a message matching several routes is
// stored once per route, in route order, all in one commit):
//
//   - QoS ≥ 1, or a route with buffer_qos0: the message, mapped to its
//     upstream topic and QoS, is appended to the buffer; Ingest returns once
//     it is durable. Under the reject policy a full buffer yields an error
//     wrapping buffer.ErrFull (the gateway answers with a negative PUBACK).
//   - QoS 0 otherwise: handed to the current connection best-effort; dropped
//     and counted when disconnected ("qos0_offline") or when the hand-off
//     queue is full ("qos0_overflow").
//
// Messages whose Origin is bridge.Origin and messages matching no route are
// ignored. Safe for concurrent use.
func (b *Bridge) Ingest(ctx context.Context, m Message) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bridge: forward %s: %w", m.Topic, err)
	}
	in, err := b.IngestAsync(m)
	if in == nil {
		return err
	}
	return in.Err()
}

// IngestAsync does what Ingest does without waiting for the disk: the
// message's records (one per matching buffered route, in route order) are
// queued for the next group commit as one unit and IngestAsync returns; the
// Ingestion reports when they are durable, with what Ingest would have
// returned. Records of successive calls are stored in the order of the
// calls, so a caller that must keep a publisher's order calls IngestAsync
// in that order (from one goroutine) and waits later. The Ingestion is nil
// when nothing was queued (no buffered route matched); err is set when the
// records could not be queued (too large, buffer closed). Safe for
// concurrent use.
func (b *Bridge) IngestAsync(m Message) (*Ingestion, error) {
	if m.Origin == Origin {
		return nil, nil
	}
	var (
		in       *Ingestion
		data     [][]byte
		accepted time.Time
	)
	for i, r := range b.routes.Load().fwd {
		if !match(r.filter, m.Topic) {
			continue
		}
		if len(r.prefix)+len(m.Topic) > 65535 {
			b.st.dropInvalid.Add(1)
			continue
		}
		qos := min(m.QoS, r.qos)
		if qos == 0 && !r.bufferQoS0 {
			up := m
			up.Origin = ""
			up.Topic = r.prefix + m.Topic
			up.QoS = qos
			b.forwardLive(up)
			continue
		}
		if accepted.IsZero() {
			accepted = time.Now()
		}
		rec := encodeForward(uint16(i), accepted, r.prefix, qos, &m)
		if in == nil {
			// One allocation for the Ingestion and the batch of the
			// usual single route.
			in = &Ingestion{b: b, topic: m.Topic}
			in.one[0] = rec
			data = in.one[:1:1]
		} else {
			data = append(data, rec)
		}
	}
	if in == nil {
		return nil, nil
	}
	p, err := b.q.AppendBatchAsync(data)
	if err != nil {
		return nil, fmt.Errorf("bridge: forward %s: %w", m.Topic, err)
	}
	in.p, in.n = p, len(data)
	return in, nil
}

// Ingestion is a message queued by IngestAsync.
type Ingestion struct {
	b     *Bridge
	p     *buffer.Pending
	n     int
	topic string
	one   [1][]byte // the batch of a message with one buffered route
	once  sync.Once
	err   error
}

// Done is closed once the outcome is known.
func (in *Ingestion) Done() <-chan struct{} { return in.p.Done() }

// Err waits for the outcome: nil once the message is durable, otherwise
// what Ingest would have returned.
func (in *Ingestion) Err() error {
	in.once.Do(func() {
		if _, err := in.p.Wait(); err != nil {
			if errors.Is(err, buffer.ErrFull) {
				in.b.st.rejected.Add(1)
			}
			in.err = fmt.Errorf("bridge: forward %s: %w", in.topic, err)
			return
		}
		in.b.st.ingested.Add(uint64(in.n))
	})
	return in.err
}

func (b *Bridge) forwardLive(m Message) {
	b.mu.Lock()
	connected := b.cur != nil
	b.mu.Unlock()
	if !connected {
		b.st.dropOffline.Add(1)
		return
	}
	select {
	case b.live <- m:
	default:
		b.st.dropOverflow.Add(1)
	}
}

// errStalled ends a connection on which nothing was acknowledged for
// stall_timeout while messages were in flight.
var errStalled = errors.New("upstream stalled: no acknowledgement within stall_timeout")

// fatalError ends Run (the buffer is closed or broken).
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

func bufferErr(op string, err error) error {
	err = fmt.Errorf("buffer %s: %w", op, err)
	if errors.Is(err, buffer.ErrClosed) {
		return &fatalError{err}
	}
	return err
}

// Run connects to the upstream (exponential backoff with jitter between
// attempts), drains the buffer and serves the subscribe routes until ctx
// is done. It returns nil after ctx is done and every goroutine it started
// has returned, or an error if the buffer fails fatally (closed).
func (b *Bridge) Run(ctx context.Context) error {
	b.mu.Lock()
	if b.started {
		b.mu.Unlock()
		return errors.New("bridge: Run called twice")
	}
	b.started = true
	b.mu.Unlock()

	// The loops below run until ctx is done: Run cancels it when it
	// returns (on a fatal error too) before waiting for them.
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Go(func() { b.liveLoop(ctx) })
	wg.Go(func() { b.rateLoop(ctx) })
	if b.sess != nil {
		defer b.sess.Close()
	}
	defer b.setState("stopped")
	if err := b.restore(); err != nil {
		return fmt.Errorf("bridge: %w", err)
	}

	attempt := 0
	for {
		b.setState("connecting")
		l, err := b.connect(ctx)
		var d time.Duration
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			b.st.connectFailures.Add(1)
			d = backoff(b.cfg.Upstream.Backoff, attempt)
			b.logConnectFailure(err, d)
		} else {
			attempt = 0
			b.disc.Store(nil)
			b.watch.connected()
			err = b.serve(ctx, l)
			if ctx.Err() != nil {
				return nil
			}
			var fe *fatalError
			if errors.As(err, &fe) {
				return fmt.Errorf("bridge: %w", err)
			}
			d = backoff(b.cfg.Upstream.Backoff, attempt)
			b.logLost(err, d)
		}
		b.setState("backoff")
		attempt++
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// backoff returns the delay before attempt n (0-based): exponential from
// min to max, with "equal jitter" (between half and all of it).
func backoff(b Backoff, n int) time.Duration {
	d := b.Min
	for i := 0; i < n && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	half := d / 2
	return half + rand.N(half+1)
}

func (b *Bridge) setState(s string) {
	b.mu.Lock()
	b.state = s
	b.mu.Unlock()
}

func (b *Bridge) connect(ctx context.Context) (link, error) {
	cctx, cancel := context.WithTimeout(ctx, b.cfg.Upstream.ConnectTimeout)
	defer cancel()
	conn, err := b.ep.dial(cctx, b.dial)
	if err != nil {
		return nil, err
	}
	u := b.cfg.Upstream
	p := connectParams{
		clientID:  b.clientID,
		username:  u.Username,
		password:  b.password,
		keepAlive: uint16(durationOf(u.KeepAlive, defaultKeepAlive) / time.Second),
		willTopic: b.status,
		onMessage: func(m Message) { b.receive(ctx, m) },
		onError: func(err error) {
			var r *RefusedError
			if errors.As(err, &r) {
				b.disc.Store(r)
				return
			}
			b.log.Debug("upstream client error", "err", err)
		},
	}
	var l link
	if b.sess != nil {
		// The first connection of a process starts clean unless restore
		// found a persisted session to resume: the upstream may hold a
		// session whose packet identifiers this process does not know.
		// Later ones resume the session unless clean_start is set or a
		// retry forced a clean one.
		p.cleanStart = u.CleanStart || b.forceClean || (!b.firstCon && !b.resume)
		if !u.CleanStart {
			p.expiry = uint32(durationOf(u.SessionExpiry, defaultSessionExpiry) / time.Second)
		}
		l, err = connect5(cctx, conn, b.sess, p)
	} else {
		l, err = connect3(cctx, conn, p, u.ConnectTimeout)
	}
	if err != nil {
		return nil, err
	}
	b.firstCon = true
	b.forceClean = false
	return l, nil
}

// restore prepares the first connection from a persisted MQTT 5 session.
// The session is resumed only if every unacknowledged buffer record up to
// the newest one in the session is either in the session or a QoS 2
// record that left it (completed upstream; its buffer ack was lost in a
// crash): then the session's packets are retransmitted by paho with their
// original packet identifiers and the drain continues after them. Any
// other case (a QoS 0/1 record that may not have reached the upstream, or
// a pending retry) starts a clean session and resends from the oldest
// unacknowledged record: at least once, in order.
func (b *Bridge) restore() error {
	if b.sess == nil || b.sess.store == nil {
		return nil
	}
	st := b.sess.store
	if st.retryMarked() {
		b.forceClean = true
		return nil
	}
	ids, seqs := st.restored()
	if len(ids) == 0 {
		b.resume = true
		return nil
	}
	maxSeq := slices.Max(seqs)
	in := make(map[uint64]bool, len(seqs))
	for _, s := range seqs {
		in[s] = true
	}
	var completed []uint64
	after := uint64(0)
scan:
	for {
		recs, err := b.q.Read(after, readBatch, readBytes)
		if err != nil {
			return bufferErr("read", err)
		}
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			if r.Seq > maxSeq {
				break scan
			}
			after = r.Seq
			if in[r.Seq] {
				continue
			}
			if rec, err := decodeRecord(r.Data); err != nil || rec.Msg.QoS != 2 {
				b.log.Info("persisted upstream session not resumed: older records may not have reached the upstream", "seq", r.Seq)
				return nil
			}
			completed = append(completed, r.Seq)
		}
	}
	if len(completed) > 0 {
		if err := b.q.Ack(completed...); err != nil {
			return bufferErr("ack", err)
		}
		b.st.forwarded.Add(uint64(len(completed)))
	}
	b.sess.mu.Lock()
	for i, id := range ids {
		f := newFlight(seqs[i], b.sess.progress)
		b.sess.pending[id] = f
		b.leftover = append(b.leftover, f)
	}
	b.sess.mu.Unlock()
	b.cursor, b.maxSent = maxSeq, maxSeq
	b.st.inflight.Store(int64(len(b.leftover)))
	b.resume = true
	b.log.Info("resuming persisted upstream session", "in_flight", len(ids))
	return nil
}

// serve runs one connection: birth message, subscriptions, drain, status,
// until the connection is lost, stalls, or ctx is done.
func (b *Bridge) serve(ctx context.Context, l link) error {
	n := b.st.connects.Add(1)
	b.log.Info("upstream connected", "url", b.ep.url.Redacted(), "session_present", l.sessionPresent(), "connects", n)

	if !l.sessionPresent() && len(b.leftover) > 0 {
		// The upstream lost the session (or a retry forced a clean one):
		// resend from the oldest unacknowledged record, in order.
		b.cursor = min(b.cursor, b.leftover[0].seq-1)
		b.leftover = nil
		b.st.inflight.Store(0)
		b.st.inflightBytes.Store(0)
	}
	window := max(min(b.cfg.Inflight, l.receiveMaximum()), 1)
	b.st.window.Store(int64(window))
	capacity := max(window, len(b.leftover))
	slots := make(chan struct{}, capacity)
	fifo := make(chan *flight, capacity)
	for _, f := range b.leftover {
		slots <- struct{}{}
		fifo <- f
	}
	b.leftover = nil

	cctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// The birth message's acknowledgement is not awaited: nothing depends on it.
	if _, err := l.publish(cctx, &Message{Topic: b.status, Payload: []byte("online"), QoS: 1, Retain: true}, 0); err != nil {
		l.close(false)
		b.leftover = b.collect(nil, fifo)
		return fmt.Errorf("birth message: %w", err)
	}
	if sub := b.routes.Load().sub; len(sub) > 0 {
		filters := make([]string, len(sub))
		qos := make([]byte, len(sub))
		for i, r := range sub {
			filters[i], qos[i] = r.filter, r.qos
		}
		if err := l.subscribe(cctx, filters, qos); err != nil {
			b.log.Error("upstream subscription failed; commands will not arrive", "err", err)
		}
	}
	b.mu.Lock()
	b.cur = l
	b.state = "connected"
	b.mu.Unlock()

	// The drain is a pipeline: read pages ahead of the cursor, publish,
	// complete in order, ack in the buffer in batches. Reading and acking
	// (badger) run beside publishing instead of between publishes.
	var head *flight
	pages := make(chan []entry, readAhead)
	acks := make(chan []uint64, ackQueue)
	after := b.cursor
	g, gctx := errgroup.WithContext(cctx)
	g.Go(func() error { return b.read(gctx, after, pages) })
	freed := make(chan struct{}, 1) // complete → send: bytes left the window
	g.Go(func() error { return b.send(gctx, l, slots, fifo, freed, pages) })
	g.Go(func() error { return b.complete(gctx, slots, fifo, freed, &head, acks) })
	g.Go(func() error { return b.ack(acks, cancel) })
	g.Go(func() error {
		select {
		case <-l.lost():
			return errors.New("connection closed")
		case <-gctx.Done():
			return nil
		}
	})
	g.Go(func() error { b.statusLoop(gctx, l); return nil })
	// When the connection ends for any reason but shutdown, close the socket
	// at once: a goroutine may be blocked writing to a dead peer. On
	// shutdown the goroutines get a grace period first.
	stopAbort := make(chan struct{})
	var aw sync.WaitGroup
	aw.Go(func() {
		select {
		case <-stopAbort:
			return
		case <-gctx.Done():
		}
		if ctx.Err() != nil {
			t := time.NewTimer(shutdownGrace)
			defer t.Stop()
			select {
			case <-stopAbort:
				return
			case <-t.C:
			}
		}
		l.abort()
	})
	err := g.Wait()
	close(stopAbort)
	aw.Wait()

	b.mu.Lock()
	b.cur = nil
	b.mu.Unlock()
	if errors.Is(err, errStalled) {
		b.st.stalls.Add(1)
	}
	if ctx.Err() != nil {
		b.closeLink(ctx, l)
	} else {
		l.close(false)
	}
	var left []*flight
	if head != nil {
		left = append(left, head)
	}
	b.leftover = b.collect(left, fifo)
	b.st.inflight.Store(int64(len(b.leftover)))
	var bytes int64
	for _, f := range b.leftover {
		bytes += int64(f.size)
	}
	b.st.inflightBytes.Store(bytes)
	if slices.ContainsFunc(b.leftover, (*flight).retry) {
		// The refused message left the session: only a clean session and
		// a resend from the oldest unacknowledged record keeps the order.
		b.forceClean = true
		if b.sess != nil && b.sess.store != nil {
			if err := b.sess.store.markRetry(); err != nil {
				b.log.Warn("persisting the clean-start marker failed", "err", err)
			}
		}
	}
	return err
}

// shutdownGrace bounds how long shutdown waits for the drain goroutines
// and for the "offline" status message.
const shutdownGrace = 2 * time.Second

// closeLink publishes the retained "offline" status and disconnects
// gracefully (a graceful DISCONNECT suppresses the will).
func (b *Bridge) closeLink(ctx context.Context, l link) {
	select {
	case <-l.lost():
	default:
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
		f, err := l.publish(wctx, &Message{Topic: b.status, Payload: []byte("offline"), QoS: 1, Retain: true}, 0)
	wait:
		for err == nil && !f.isDone() {
			select {
			case <-f.wait():
			case <-wctx.Done():
				break wait
			case <-l.lost():
				break wait
			}
		}
		cancel()
	}
	l.close(true)
}

// collect gathers the flights of a finished connection: acknowledged ones
// are acked in the buffer, the others are returned in order.
func (b *Bridge) collect(left []*flight, fifo chan *flight) []*flight {
	for {
		select {
		case f := <-fifo:
			left = append(left, f)
			continue
		default:
		}
		break
	}
	var out []*flight
	var acks []uint64
	for _, f := range left {
		if f.isDone() {
			if err := f.result(); err == nil || errors.Is(err, errRejected) {
				b.finish(f, err)
				acks = append(acks, f.seq)
				continue
			}
		}
		out = append(out, f)
	}
	if len(acks) > 0 {
		if err := b.q.Ack(acks...); err != nil {
			b.log.Warn("acknowledging records failed; they will be sent again", "err", err)
		}
	}
	return out
}

func (b *Bridge) finish(f *flight, err error) {
	if err != nil {
		b.st.dropRejectd.Add(1)
		b.log.Warn("upstream rejected a message; dropped", "seq", f.seq, "err", err)
		return
	}
	b.st.forwarded.Add(1)
}

// Tuning of the drain.
const (
	// readBatch and readBytes bound one Read of the buffer (a page);
	// readAhead pages are read ahead of the one being sent.
	readBatch = 1024
	readBytes = 1 << 20
	readAhead = 2
	// ackBatch and ackDelay bound how many acknowledged records, and for
	// how long, wait before they are acked in the buffer together: each
	// Ack is a badger transaction, so acking one by one costs more than
	// the rest of the drain. A record acknowledged upstream but not yet in
	// the buffer is sent again after a crash (a duplicate, never a loss).
	// ackQueue batches may wait for the acking goroutine.
	ackBatch = 1024
	ackDelay = 50 * time.Millisecond
	ackQueue = 4
	// maxInflightBytes bounds the topic and payload bytes in flight (the
	// window holds them in memory twice: as messages and in the session).
	maxInflightBytes = 4 << 20
)

// entry is a buffer record read by the drain, decoded.
type entry struct {
	seq uint64
	rec record
	err error // undecodable
}

// read reads the buffer from after on, a page at a time, decodes it and
// hands it to send, waiting for appends when it reached the end.
func (b *Bridge) read(ctx context.Context, after uint64, pages chan<- []entry) error {
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	for {
		recs, err := b.q.Read(after, readBatch, readBytes)
		if err != nil {
			return bufferErr("read", err)
		}
		if len(recs) == 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-b.q.Notify():
			case <-poll.C:
			}
			continue
		}
		page := make([]entry, len(recs))
		for i, r := range recs {
			page[i].seq = r.Seq
			page[i].rec, page[i].err = decodeRecord(r.Data)
		}
		after = recs[len(recs)-1].Seq
		select {
		case pages <- page:
		case <-ctx.Done():
			return nil
		}
	}
}

// send is the single FIFO cursor through the buffer: it publishes records
// in sequence order, holding at most cap(slots) unacknowledged.
func (b *Bridge) send(ctx context.Context, l link, slots chan struct{}, fifo chan *flight, freed <-chan struct{}, pages <-chan []entry) error {
	// A cancellable context costs a registration and removal per publish
	// (paho derives one per message): publish gets one without
	// cancellation. A wait inside publish ends when the connection is
	// lost, which shutdown brings about after its grace period.
	pubCtx := context.WithoutCancel(ctx)
	for {
		var page []entry
		select {
		case page = <-pages:
		case <-ctx.Done():
			return nil
		}
		for i := range page {
			e := &page[i]
			if e.err != nil {
				b.st.dropCorrupt.Add(1)
				b.log.Error("undecodable buffer record dropped", "seq", e.seq, "err", e.err)
				if err := b.q.Ack(e.seq); err != nil {
					return bufferErr("ack", err)
				}
				b.cursor = e.seq
				continue
			}
			r := &e.rec
			if exp := r.Msg.MessageExpiry; exp > 0 {
				age := uint32(time.Since(r.Accepted) / time.Second)
				if age >= exp {
					b.st.dropExpired.Add(1)
					if err := b.q.Ack(e.seq); err != nil {
						return bufferErr("ack", err)
					}
					b.cursor = e.seq
					continue
				}
				r.Msg.MessageExpiry = exp - age
			}
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return nil
			}
			size := len(r.Msg.Topic) + len(r.Msg.Payload)
			// The byte budget: large messages take fewer slots. At least
			// one message is always in flight, whatever its size.
			for n := b.st.inflightBytes.Load(); n > 0 && n+int64(size) > maxInflightBytes; n = b.st.inflightBytes.Load() {
				select {
				case <-freed:
				case <-ctx.Done():
					<-slots
					return nil
				}
			}
			if err := b.pace.wait(ctx, size); err != nil {
				<-slots
				return nil
			}
			f, err := l.publish(pubCtx, &r.Msg, e.seq)
			if err != nil {
				<-slots
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			f.size = size
			b.st.inflightBytes.Add(int64(size))
			if e.seq <= b.maxSent {
				b.st.resent.Add(1)
			} else {
				b.maxSent = e.seq
			}
			b.cursor = e.seq
			b.st.inflight.Add(1)
			fifo <- f
		}
	}
}

// complete waits for flights in order and hands their sequence numbers to
// ack in batches: when ackBatch are waiting, when the oldest has waited
// ackDelay, and when it returns (it then closes acks). It ends the
// connection with errStalled when the oldest flight is not acknowledged
// within stall_timeout of the last progress.
func (b *Bridge) complete(ctx context.Context, slots chan struct{}, fifo chan *flight, freed chan<- struct{}, head **flight, acks chan<- []uint64) error {
	var batch []uint64
	var ackBy time.Time // when the oldest entry of batch must be handed over
	handOver := func() {
		if len(batch) > 0 {
			acks <- batch
			batch = nil
		}
	}
	defer close(acks)
	defer handOver()
	stall := time.NewTimer(b.cfg.StallTimeout)
	defer stall.Stop()
	flushT := time.NewTimer(ackDelay)
	defer flushT.Stop()
	progress := time.Now()
	for {
		var f *flight
		select {
		case f = <-fifo:
		default:
			// Nothing in flight. Acking at once here would ack one record
			// at a time whenever the upstream acknowledges faster than
			// send publishes: only a quiet ackDelay flushes the batch.
			var flushC <-chan time.Time
			if len(batch) > 0 {
				flushT.Reset(time.Until(ackBy))
				flushC = flushT.C
			}
			select {
			case f = <-fifo:
				progress = time.Now()
			case <-flushC:
				handOver()
				continue
			case <-ctx.Done():
				return nil
			}
		}
		*head = f
		for !f.isDone() {
			if len(batch) > 0 && !time.Now().Before(ackBy) {
				handOver()
			}
			stall.Reset(time.Until(progress.Add(b.cfg.StallTimeout)))
			var flushC <-chan time.Time
			if len(batch) > 0 {
				flushT.Reset(time.Until(ackBy))
				flushC = flushT.C
			}
			select {
			case <-f.wait():
			case <-flushC:
			case <-stall.C:
				return errStalled
			case <-ctx.Done():
				return nil
			}
		}
		res := f.result()
		if errors.Is(res, errLost) || errors.Is(res, errRetry) {
			return res
		}
		*head = nil
		progress = time.Now()
		b.finish(f, res)
		if len(batch) == 0 {
			ackBy = progress.Add(ackDelay)
			batch = make([]uint64, 0, ackBatch)
		}
		batch = append(batch, f.seq)
		b.st.inflight.Add(-1)
		b.st.inflightBytes.Add(-int64(f.size))
		select {
		case freed <- struct{}{}:
		default:
		}
		<-slots
		if len(batch) >= ackBatch {
			handOver()
		}
	}
}

// ack acks the batches complete hands over in the buffer until complete
// closes acks. On an error it calls stop (ending the connection) but keeps
// receiving, so that complete never blocks, and returns the first error.
func (b *Bridge) ack(acks <-chan []uint64, stop func()) error {
	var first error
	for batch := range acks {
		if first != nil {
			continue
		}
		if err := b.q.Ack(batch...); err != nil {
			first = bufferErr("ack", err)
			stop()
		}
	}
	return first
}

// receive handles a message from a subscribe route.
func (b *Bridge) receive(ctx context.Context, m Message) {
	for _, r := range b.routes.Load().sub {
		if !match(r.filter, m.Topic) {
			continue
		}
		m.Topic = r.prefix + strings.TrimPrefix(m.Topic, r.strip)
		m.Origin = Origin
		if err := b.local.Publish(ctx, m); err != nil {
			b.st.dropLocal.Add(1)
			b.log.Warn("publishing upstream message locally failed", "topic", m.Topic, "err", err)
			return
		}
		b.st.received.Add(1)
		return
	}
}

// liveLoop hands unbuffered QoS 0 messages to the current connection.
func (b *Bridge) liveLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-b.live:
			b.mu.Lock()
			l := b.cur
			b.mu.Unlock()
			if l == nil {
				b.st.dropOffline.Add(1)
				continue
			}
			wctx, cancel := context.WithTimeout(ctx, b.cfg.Upstream.ConnectTimeout)
			if _, err := l.publish(wctx, &m, 0); err != nil {
				b.st.dropOffline.Add(1)
			} else {
				b.st.live.Add(1)
			}
			cancel()
		}
	}
}

// rateLoop measures the forward rate every 5 seconds.
func (b *Bridge) rateLoop(ctx context.Context) {
	const every = 5 * time.Second
	t := time.NewTicker(every)
	defer t.Stop()
	last, at := b.st.forwarded.Load(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			cur := b.st.forwarded.Load()
			r := float64(cur-last) / now.Sub(at).Seconds()
			b.st.rate.Store(mathFloat64bits(r))
			last, at = cur, now
		}
	}
}

// statusLoop publishes the JSON status document on <status_topic>/bridge.
func (b *Bridge) statusLoop(ctx context.Context, l link) {
	every := durationOf(b.cfg.StatusInterval, defaultStatusInterval)
	if every <= 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s := b.Stats()
			doc, _ := json.Marshal(statusDoc{
				Gateway: b.gateway, Time: time.Now().UTC(), Connected: s.Connected,
				BacklogMessages: s.BacklogMessages, BacklogBytes: s.BacklogBytes,
				OldestAgeSeconds: s.OldestAge.Seconds(), Inflight: s.Inflight,
				Reconnects: s.Reconnects, Forwarded: s.Forwarded, ForwardRate: s.ForwardRate,
				Dropped: s.Dropped,
			})
			if _, err := l.publish(ctx, &Message{Topic: b.status + "/bridge", Payload: doc, ContentType: "application/json"}, 0); err != nil {
				b.log.Debug("status publish failed", "err", err)
			}
		}
	}
}

type statusDoc struct {
	Gateway          string    `json:"gateway"`
	Time             time.Time `json:"time"`
	Connected        bool      `json:"connected"`
	BacklogMessages  uint64    `json:"backlog_messages"`
	BacklogBytes     uint64    `json:"backlog_bytes"`
	OldestAgeSeconds float64   `json:"oldest_age_seconds"`
	Inflight         int64     `json:"inflight"`
	Reconnects       uint64    `json:"reconnects"`
	Forwarded        uint64    `json:"forwarded"`
	ForwardRate      float64   `json:"forward_rate"`
	Dropped          Dropped   `json:"dropped"`
}
