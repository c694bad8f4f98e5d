package broker

import (
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// IngressFunc is the store-and-forward hook (see Options.Ingress). It queues
// m for storage and returns at once; the Stored reports when m is durable.
// Calls for one publisher come from one goroutine, in the order of its
// publishes, and must be stored in that order. The Stored is nil when there
// is nothing to wait for; err is set when m could not even be queued.
type IngressFunc func(m *Message) (Stored, error)

// Stored is a message queued by Ingress.
type Stored interface {
	Done() <-chan struct{} // closed once the outcome is known
	Err() error            // the outcome, once Done is closed: nil when durable
}

// refused is the Stored of a message Ingress could not queue.
type refused struct{ err error }

var closedCh = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (r refused) Done() <-chan struct{} { return closedCh }
func (r refused) Err() error            { return r.err }

// ingestSync runs Ingress to completion (in-process publishes and wills).
func (b *Broker) ingestSync(m *Message) error {
	st, err := b.ingress(m)
	if err == nil && st != nil {
		<-st.Done()
		err = st.Err()
	}
	return err
}

// Asynchronous acknowledgements. A client's reading goroutine must not wait
// for the disk: a client with 64 publishes in flight would then have only
// one of them in each group commit. So a network publish that Ingress
// queued is taken out of mochi's handling (see takeOver: nothing is
// acknowledged or delivered) and put on the client's ingress line. The
// line's goroutine waits for each message in turn and then acknowledges and
// delivers it as mochi would have (retained, QoS 2 state, back-pressure) —
// in the order the client sent them, also when some are refused. The
// reading goroutine meanwhile goes on reading; it blocks only when the line
// is full (receive_maximum messages), which holds the client back through
// TCP.
//
// While a line has messages pending, everything the client publishes goes
// through it (also messages Ingress has nothing to wait for), so that
// acknowledgements and deliveries keep the client's order. The line closes
// when the connection ends, after its messages are done: a message that
// became durable after its publisher disconnected is still delivered
// locally (it is forwarded upstream too), without an acknowledgement, so the
// publisher sends it again if its session survives (a duplicate, never a
// loss).
//
// How the line answers a durable message (see deliverIngested). First it
// waits for room at the subscribers (the policy's back-pressure, which
// mochi would run in OnPublish). Then a retained message and a QoS 2
// message are handed back to mochi with InjectPacket on the client, marked
// as ingested, and mochi processes them a second time: it retains before
// it acknowledges and keeps the QoS 2 state (PUBREC in flight until
// PUBREL, stored for persistent sessions). Every other message — QoS 1 and
// QoS 0, not retained: nearly all of them — takes a shorter way that does
// what mochi's second pass would have done, in the same order, without
// running the packet through mochi's checks again (they passed when it was
// read): the PUBACK written through the client (mochi's encoder, hooks and
// counters), then the delivery through an inline client with the
// publisher's id (deliverAs), which makes mochi publish to subscribers with
// the publisher as origin (no-local holds) and nothing else — skipped when
// no subscription of any kind matches the topic (roomPlan.nobody). What
// the short way leaves out is the PUBACK's brief stay in mochi's in-flight
// map: added and removed around the write, which no one can observe, but
// for a persistent session written to and deleted from the broker's store,
// two fsync'd transactions per message that made such publishers 60 times
// slower (BenchmarkIngest/pubs8-persistent).
type ingressLine struct {
	ch      chan *ingested // pointers: a packet is 800 bytes, the channel holds receive_maximum
	pending atomic.Int64   // queued and not yet acknowledged or refused
	done    chan struct{}
	running bool   // the line's goroutine is started (set by the reading goroutine)
	user    string // the client's username, converted once
}

type ingested struct {
	pk packets.Packet
	m  Message // what Ingress saw (kept here so that it needs no allocation)
	st Stored  // nil: nothing to wait for
}

// getIngested returns an empty entry from b.entries, which recycles them:
// one per message otherwise, the largest allocation of a durable publish.
func (b *Broker) getIngested() *ingested {
	if in, ok := b.entries.Get().(*ingested); ok {
		return in
	}
	return new(ingested)
}

func (b *Broker) putIngested(in *ingested) {
	*in = ingested{} // drop references to the payload and the Stored
	b.entries.Put(in)
}

// ingestedMark tags a publish handed back to mochi by a line, so that
// OnPublish does not run Ingress on it again. A PUBLISH never carries
// subscription filters, and OnPublish removes the mark.
var ingestedMark = packets.Subscriptions{{Filter: "\x00fieldgate-ingested"}}

func isIngested(pk *packets.Packet) bool {
	return len(pk.Filters) == 1 && pk.Filters[0].Filter == ingestedMark[0].Filter
}

// ingestNetwork runs Ingress for a publish read from a network client. It
// returns queued=true when the message went on the client's line (mochi must
// leave it alone); otherwise mochi goes on as usual, unless err is set
// (refused).
func (b *Broker) ingestNetwork(cl *mqtt.Client, pk *packets.Packet) (queued bool, err error) {
	line := b.line(cl)
	in := b.getIngested()
	in.m = messageFrom(*pk)
	in.m.Origin = cl.ID
	in.m.Username = line.user
	st, err := b.ingress(&in.m)

	idle := line.pending.Load() == 0
	switch {
	case err != nil && idle:
		b.putIngested(in)
		return false, err
	case err != nil:
		st = refused{err} // answered in its turn
	case st == nil && idle:
		b.putIngested(in)
		return false, nil
	}
	if !line.running {
		line.running = true
		go b.runLine(cl, line)
	}
	in.pk = *pk
	// The topic alias is resolved already; the line's copy must not set it
	// again (the client may have changed it meanwhile).
	in.pk.Properties.TopicAliasFlag = false
	in.pk.Properties.TopicAlias = 0
	in.pk.Filters = ingestedMark
	in.st = st
	line.pending.Add(1)
	line.ch <- in
	return true, nil
}

// line returns cl's line, creating it (not yet running) on cl's first
// publish. Only cl's reading goroutine calls it; closeLine ends the line
// from the same goroutine.
func (b *Broker) line(cl *mqtt.Client) *ingressLine {
	if v, ok := b.lines.Load(cl); ok {
		return v.(*ingressLine)
	}
	l := &ingressLine{
		ch:   make(chan *ingested, max(b.cfg.Limits.ReceiveMaximum, 1)),
		done: make(chan struct{}),
		user: string(cl.Properties.Username),
	}
	b.lines.Store(cl, l)
	return l
}

// closeLine ends cl's line, if any, once its messages are done.
func (b *Broker) closeLine(cl *mqtt.Client) {
	if v, ok := b.lines.LoadAndDelete(cl); ok {
		l := v.(*ingressLine)
		if l.running {
			close(l.ch)
			<-l.done
		}
	}
}

func (b *Broker) runLine(cl *mqtt.Client, l *ingressLine) {
	defer close(l.done)
	h := &policy{b: b}
	// Acknowledgements of messages that became durable together (one group
	// commit) leave in one write: the line holds the client's writes while
	// it works through messages that are ready, and lets them go before it
	// waits for the disk or for the client.
	acks, _ := cl.Net.Conn.(ackHolder)
	holding := false
	hold := func(on bool) {
		if acks != nil && on != holding {
			acks.holdAcks(on)
			holding = on
		}
	}
	defer hold(false)
	for {
		var in *ingested
		select {
		case in = <-l.ch:
		default:
			hold(false)
			in = <-l.ch
		}
		if in == nil {
			return // closed
		}
		var err error
		if in.st != nil {
			select {
			case <-in.st.Done():
			default:
				hold(false)
				<-in.st.Done()
			}
			err = in.st.Err()
		}
		hold(true)
		if err != nil {
			_ = h.reject(cl, in.pk, err)
		} else {
			b.deliverIngested(h, cl, &in.pk)
		}
		l.pending.Add(-1)
		b.putIngested(in)
	}
}

// deliverAs makes mochi publish pk to its subscribers as if cl had sent
// it, and do nothing else: it injects pk through an inline client with
// cl's id, username and protocol version (the twin), so that no-local and
// the origin apply as for cl.
//
// Twins are pooled in b.twins. A twin is used by one goroutine at a time,
// and mochi keeps no reference to the client of an injected packet once
// InjectPacket has returned (it is not in the client list; deliveries copy
// the packet). Pooled rather than one per line because mochi gives every
// client an outbound queue of max_queued_messages + max_inflight slots (24
// KiB by default), which a twin never uses.
func (b *Broker) deliverAs(srv *mqtt.Server, cl *mqtt.Client, pk *packets.Packet) error {
	t, _ := b.twins.Get().(*mqtt.Client)
	if t == nil {
		t = srv.NewClient(nil, mqtt.LocalListener, cl.ID, true)
	}
	t.ID = cl.ID
	t.Properties.ProtocolVersion = cl.Properties.ProtocolVersion
	t.Properties.Username = cl.Properties.Username
	err := srv.InjectPacket(t, *pk)
	t.Properties.Username = nil
	b.twins.Put(t)
	return err
}

// ackHolder is implemented by the connection wrapper that batches
// acknowledgements (batchConn).
type ackHolder interface {
	holdAcks(on bool)
}

// deliverIngested acknowledges (if cl is still connected) and delivers a
// durable message, as mochi would have (see ingressLine). pk carries
// ingestedMark.
func (b *Broker) deliverIngested(h *policy, cl *mqtt.Client, pk *packets.Packet) {
	srv := b.srv.Load()
	plan := b.rooms.plan(srv, pk.TopicName)
	h.waitForQueues(cl, plan)
	if !cl.Closed() && (pk.FixedHeader.Retain || pk.FixedHeader.Qos == 2) {
		err := srv.InjectPacket(cl, *pk)
		if err == nil {
			b.uncount(srv)
			return
		}
		if !cl.Closed() {
			b.log.Debug("acknowledging a stored publish failed", "client", cl.ID, "topic", pk.TopicName, "error", err)
			return
		}
		// Gone meanwhile: deliver without an acknowledgement.
	} else if pk.FixedHeader.Qos == 1 && !cl.Closed() {
		// What mochi's processPublish does for a QoS 1 message, less the
		// in-flight entry it adds and removes around the write.
		_ = cl.WritePacket(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Puback},
			PacketID:    pk.PacketID,
			ReasonCode:  packets.CodeSuccess.Code,
		})
	}
	if plan.nobody && !pk.FixedHeader.Retain {
		return // no one to deliver to (the twin would only count it)
	}
	// Deliver as the publisher (no-local and origins apply), through the
	// twin: mochi retains it if asked and publishes it to subscribers.
	if err := b.deliverAs(srv, cl, pk); err != nil {
		b.log.Debug("delivering a stored publish failed", "client", cl.ID, "topic", pk.TopicName, "error", err)
		return
	}
	b.uncount(srv)
}

// uncount undoes InjectPacket's counting of a packet mochi counted when it
// was read.
func (b *Broker) uncount(srv *mqtt.Server) {
	atomic.AddInt64(&srv.Info.PacketsReceived, -1)
	atomic.AddInt64(&srv.Info.MessagesReceived, -1)
}

// holdAcks lets the client's ingress line hold acknowledgements while it
// answers a run of messages that are durable already, as the reading
// goroutine does while it works through buffered input (see batchConn):
// whoever ends a hold writes what is held, and nothing is held while the
// line waits.
func (c *batchConn) holdAcks(on bool) {
	if !on {
		c.release()
		return
	}
	c.mu.Lock()
	c.active = true
	c.mu.Unlock()
}
