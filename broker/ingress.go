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
// queued is taken out of mochi's handling (OnPublish returns
// ErrRejectPacket: nothing is acknowledged or delivered) and put on the
// client's ingress line. The line's goroutine waits for each message in
// turn and then hands it back to mochi with InjectPacket, marked as
// ingested, which acknowledges and delivers it as mochi would have
// (retained, QoS 2 state, back-pressure) — in the order the client sent
// them, also when some are refused. The reading goroutine meanwhile goes on
// reading; it blocks only when the line is full (receive_maximum
// messages), which holds the client back through TCP.
//
// While a line has messages pending, everything the client publishes goes
// through it (also messages Ingress has nothing to wait for), so that
// acknowledgements and deliveries keep the client's order. The line closes
// when the connection ends, after its messages are done: a message that
// became durable after its publisher disconnected is still delivered
// locally (it is forwarded upstream too), without an acknowledgement, so the
// publisher sends it again if its session survives (a duplicate, never a
// loss).
type ingressLine struct {
	ch      chan *ingested // pointers: a packet is 800 bytes, the channel holds receive_maximum
	pending atomic.Int64   // queued and not yet acknowledged or refused
	done    chan struct{}
}

type ingested struct {
	pk packets.Packet
	st Stored // nil: nothing to wait for
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
func (b *Broker) ingestNetwork(cl *mqtt.Client, pk packets.Packet) (queued bool, err error) {
	m := messageFrom(pk)
	m.Origin = cl.ID
	m.Username = string(cl.Properties.Username)
	st, err := b.ingress(&m)

	var line *ingressLine
	if v, ok := b.lines.Load(cl); ok {
		line = v.(*ingressLine)
	}
	idle := line == nil || line.pending.Load() == 0
	switch {
	case err != nil && idle:
		return false, err
	case err != nil:
		st = refused{err} // answered in its turn
	case st == nil && idle:
		return false, nil
	}
	if line == nil {
		line = b.startLine(cl)
	}
	// The topic alias is resolved already; the line's copy must not set it
	// again (the client may have changed it meanwhile).
	pk.Properties.TopicAliasFlag = false
	pk.Properties.TopicAlias = 0
	pk.Filters = ingestedMark
	line.pending.Add(1)
	line.ch <- &ingested{pk: pk, st: st}
	return true, nil
}

// startLine creates and starts cl's line. Only cl's reading goroutine calls
// it; closeLine ends the line from the same goroutine.
func (b *Broker) startLine(cl *mqtt.Client) *ingressLine {
	l := &ingressLine{
		ch:   make(chan *ingested, max(b.cfg.Limits.ReceiveMaximum, 1)),
		done: make(chan struct{}),
	}
	b.lines.Store(cl, l)
	go b.runLine(cl, l)
	return l
}

// closeLine ends cl's line, if any, once its messages are done.
func (b *Broker) closeLine(cl *mqtt.Client) {
	if v, ok := b.lines.LoadAndDelete(cl); ok {
		l := v.(*ingressLine)
		close(l.ch)
		<-l.done
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
			b.deliverIngested(cl, in.pk)
		}
		l.pending.Add(-1)
	}
}

// ackHolder is implemented by the connection wrapper that batches
// acknowledgements (batchConn).
type ackHolder interface {
	holdAcks(on bool)
}

// deliverIngested hands a durable message back to mochi to be acknowledged
// and delivered.
func (b *Broker) deliverIngested(cl *mqtt.Client, pk packets.Packet) {
	srv := b.srv.Load()
	if !cl.Closed() {
		err := srv.InjectPacket(cl, pk)
		if err == nil {
			b.uncount(srv)
			return
		}
		if !cl.Closed() {
			b.log.Debug("acknowledging a stored publish failed", "client", cl.ID, "topic", pk.TopicName, "error", err)
			return
		}
	}
	// No one to acknowledge: deliver as the publisher, through an inline
	// client of the same id (no-local and origins still apply).
	pk.Filters = nil
	inl := srv.NewClient(nil, mqtt.LocalListener, cl.ID, true)
	inl.Properties.ProtocolVersion = cl.Properties.ProtocolVersion
	inl.Properties.Username = cl.Properties.Username
	if err := srv.InjectPacket(inl, pk); err != nil {
		b.log.Debug("delivering a publish of a disconnected client failed", "client", cl.ID, "topic", pk.TopicName, "error", err)
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
