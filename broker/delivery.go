package broker

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Delivery flow control: what the broker sends to one network client.
//
// The window. MQTT 5 forbids sending a client more unacknowledged QoS 1/2
// PUBLISH packets than its Receive Maximum [MQTT-3.3.4-9]. mochi v2.7.9
// enforces it by parking what does not fit in the client's in-flight map
// and sending it later, one per packet the client sends; that path frees
// the packet id as soon as it writes the message, so a later message reuses
// an id the client still holds (QoS 2 messages were lost as duplicates, QoS
// 1 stalled). fieldgate turns that path off (the send quota is 0) and holds
// the window at the one place every delivery passes: mochi's write loop,
// the client's own goroutine that writes its write queue in order. Before
// the loop writes a QoS 1/2 PUBLISH (OnPacketEncode), flow.acquire waits
// until fewer than min(Receive Maximum, limits.max_inflight) packet ids are
// held by the client and the message's id is not one of them; the id is
// then held until the client's PUBACK, PUBCOMP or failing PUBREC is read
// (OnPacketRead). Whoever published — another client, the client itself,
// an in-process publisher, a retained message sent on SUBSCRIBE — the
// message is on the write queue, so the window holds for all of them.
//
// The queue. What does not fit waits in the write queue, in order, with the
// packet id mochi gave it when it was queued (ids stay reserved in mochi's
// in-flight map until acknowledged, so no id is reused while the client
// holds it). The queue has limits.max_queued_messages slots plus
// max_inflight of headroom. A publish waits (waitForQueues) while a
// subscriber's queue holds max_queued_messages packets, and once it waited,
// until the queue is back to half that; so publishers are slowed to the
// pace of subscribers that keep up, and nothing is lost. A wait ends when
// the subscriber has not taken max_queued_messages/16 messages within
// limits.delivery_wait: then limits.when_queue_full applies to that
// subscriber — "drop": publishers stop waiting for it until its queue has
// emptied, and what does not fit is dropped by mochi (counted); or
// "disconnect". So one stuck subscriber costs each publisher at most one
// short wait, and never holds up other subscribers, device pollers or the
// bridge. A client's own publishes never wait for its own queue (its
// acknowledgements come in on the connection that would be waiting).
//
// A resumed session. mochi writes every in-flight message of a resumed
// session at once, right after CONNACK. While it does (between
// OnSessionEstablish and OnSessionEstablished) the connection drops those
// PUBLISH packets (batchConn.discardResent), deliveries to the client wait
// (OnACLCheck, awaitReady), and PUBRELs that mochi resends are counted in
// the window. Then the session's messages go on the write queue in their
// original order, ahead of anything new, and leave through the window like
// any other.

// flow is the delivery state of one connected network client.
type flow struct {
	cl    *mqtt.Client
	limit int                  // packet ids the client may hold
	out   chan *packets.Packet // mochi's write queue (nil if not found)
	conn  *batchConn           // nil if the client's connection is not one

	// ready is closed once the session is established (CONNACK written,
	// a resumed session's resend done) or the flow ended.
	ready     chan struct{}
	readyOnce sync.Once

	mu       sync.Mutex
	resuming bool                // mochi is resending the session's messages
	held     map[uint16]struct{} // ids of QoS 1/2 PUBLISH/PUBREL the client holds
	room     chan struct{}       // closed when held shrinks or the flow ends; nil if nobody waits
	ended    bool
	backlog  []*packets.Packet // a resumed session's messages not yet on out
	// subAlias is the packet id a SUBSCRIBE or UNSUBSCRIBE was given in
	// place of the client's (orig) while mochi handles it (see alias).
	subAlias, subOrig uint16

	backlogLen atomic.Int64
	waiting    atomic.Bool  // the write loop waits in acquire
	written    atomic.Int64 // PUBLISH packets written to the client
	// stalled is set when a publisher gave up waiting for this client's
	// queue, until the queue is seen empty; dropped counts the deliveries
	// mochi dropped meanwhile.
	stalled atomic.Bool
	dropped atomic.Int64
}

func newFlow(cl *mqtt.Client, limit int) *flow {
	f := &flow{
		cl:    cl,
		limit: limit,
		out:   outboundQueue(cl),
		ready: make(chan struct{}),
		held:  make(map[uint16]struct{}, min(limit, 64)),
	}
	f.conn, _ = cl.Net.Conn.(*batchConn)
	return f
}

func (f *flow) setReady() { f.readyOnce.Do(func() { close(f.ready) }) }

// wake wakes the write loop if it waits; f.mu must be held.
func (f *flow) wake() {
	if f.room != nil {
		close(f.room)
		f.room = nil
	}
}

// end is called when the connection is gone: nothing waits for it any more.
func (f *flow) end() {
	f.mu.Lock()
	f.ended = true
	f.backlog = nil
	f.backlogLen.Store(0)
	f.wake()
	f.mu.Unlock()
	f.setReady()
}

// queued is the number of packets waiting to be written to the client.
func (f *flow) queued() int {
	n := int(f.backlogLen.Load())
	if f.out != nil {
		n += len(f.out)
	}
	return n
}

// acquire runs in the client's write loop before a QoS 1/2 PUBLISH is
// written: it waits until the client has room for pk (see above) and holds
// its id. While mochi resends a resumed session, a resent message (DUP set)
// passes at once: the connection drops it, it is queued again afterwards.
func (f *flow) acquire(pk *packets.Packet) {
	f.mu.Lock()
	if f.resuming && pk.FixedHeader.Dup {
		f.mu.Unlock()
		return
	}
	for !f.ended {
		if _, held := f.held[pk.PacketID]; !held && len(f.held) < f.limit {
			f.held[pk.PacketID] = struct{}{}
			break
		}
		if f.room == nil {
			f.room = make(chan struct{})
		}
		room := f.room
		f.mu.Unlock()
		// mochi may hold packets (this client's earlier deliveries, or
		// acknowledgements written meanwhile, see OnPacketSent) in its
		// write buffer: they must reach the client before it is waited for.
		f.waiting.Store(true)
		_ = flushWrites(f.cl)
		t := time.NewTimer(time.Second)
		select {
		case <-room:
		case <-t.C: // a connection mochi closed without a disconnect hook
			if f.cl.Closed() {
				f.end()
			}
		}
		t.Stop()
		f.waiting.Store(false)
		f.mu.Lock()
	}
	f.fill()
	f.mu.Unlock()
}

// resent counts a PUBREL that mochi resends to a resumed session in the
// window (the client holds its id until PUBCOMP).
func (f *flow) resent(pk *packets.Packet) {
	f.mu.Lock()
	if f.resuming {
		f.held[pk.PacketID] = struct{}{}
	}
	f.mu.Unlock()
}

// release frees the id of a QoS 1/2 flow the client has ended.
func (f *flow) release(id uint16) {
	f.mu.Lock()
	if _, ok := f.held[id]; ok {
		delete(f.held, id)
		f.wake()
	}
	f.mu.Unlock()
}

// fill moves what fits of the backlog onto the write queue; f.mu must be
// held.
func (f *flow) fill() {
	for len(f.backlog) > 0 && f.out != nil {
		select {
		case f.out <- f.backlog[0]:
			f.backlog[0] = nil
			f.backlog = f.backlog[1:]
		default:
			f.backlogLen.Store(int64(len(f.backlog)))
			return
		}
	}
	f.backlog = nil
	f.backlogLen.Store(0)
}

// alias runs before mochi handles a SUBSCRIBE or UNSUBSCRIBE from the
// client. mochi refuses one whose packet id is in the client's in-flight map
// (0x91, "packet identifier in use"), but that map also holds the ids of
// messages sent to the client, and a client chooses its ids independently
// of the server's [MQTT-2.2.1]: a client that subscribed while messages to
// it were in flight (say, on resuming its session) was refused at random.
// Such a packet gets, while mochi handles it, a free id in place of the
// client's, and unalias puts the client's back into the SUBACK or UNSUBACK.
func (f *flow) alias(pk *packets.Packet) {
	in, ok := f.cl.State.Inflight.Get(pk.PacketID)
	if !ok || (in.FixedHeader.Type != packets.Publish && in.FixedHeader.Type != packets.Pubrel) {
		return // free, or the client's own QoS 2 publish: a real conflict
	}
	for id := uint16(65535); id > 0; id-- {
		if _, used := f.cl.State.Inflight.Get(id); !used {
			f.mu.Lock()
			f.subAlias, f.subOrig = id, pk.PacketID
			f.mu.Unlock()
			pk.PacketID = id
			return
		}
	}
}

// unalias restores the client's packet id in the acknowledgement of an
// aliased SUBSCRIBE or UNSUBSCRIBE.
func (f *flow) unalias(pk *packets.Packet) {
	f.mu.Lock()
	if f.subAlias != 0 && pk.PacketID == f.subAlias {
		pk.PacketID = f.subOrig
		f.subAlias, f.subOrig = 0, 0
	}
	f.mu.Unlock()
}

// startFlow takes over delivery flow control for cl from mochi (see
// policy.OnSessionEstablish); resume is set when mochi will resume a session
// and resend its in-flight messages.
func (b *Broker) startFlow(cl *mqtt.Client, resume bool) {
	limit := b.cfg.Limits.MaxInflight
	if rm := int(cl.Properties.Props.ReceiveMaximum); rm > 0 { // absent: 65535 by the spec
		limit = min(limit, rm)
	}
	cl.Properties.Props.ReceiveMaximum = 0 // mochi resets the send quota from this on take-over
	cl.State.Inflight.ResetSendQuota(0)    // 0 turns off mochi's deferred sending
	f := newFlow(cl, limit)
	if resume {
		f.resuming = true
		if f.conn != nil {
			f.conn.discardResent(true)
		}
	}
	if old, loaded := b.flows.Swap(cl, f); loaded {
		old.(*flow).end()
	}
}

// flowReady runs once the session is established (CONNACK sent, a resumed
// session's messages resent by mochi): a resumed session's PUBLISH packets,
// which the connection dropped, are queued in their original order, and
// deliveries to the client may start.
func (b *Broker) flowReady(cl *mqtt.Client) {
	v, ok := b.flows.Load(cl)
	if !ok {
		return
	}
	f := v.(*flow)
	f.mu.Lock()
	if f.resuming && f.conn == nil {
		f.resuming = false // mochi's resend went out as it was (never the case: every connection is a batchConn)
	}
	if f.resuming {
		f.resuming = false
		if n, size := f.conn.discardResent(false); n > 0 {
			srv := b.srv.Load() // mochi counted the dropped writes as sent
			atomic.AddInt64(&srv.Info.PacketsSent, -n)
			atomic.AddInt64(&srv.Info.MessagesSent, -n)
			atomic.AddInt64(&srv.Info.BytesSent, -size)
		}
		var msgs []packets.Packet
		for _, pk := range cl.State.Inflight.GetAll(false) {
			if pk.FixedHeader.Type == packets.Publish {
				pk.FixedHeader.Dup = true // [MQTT-3.3.1-1]
				msgs = append(msgs, pk)
			}
		}
		for i := range originalOrder(msgs) {
			f.backlog = append(f.backlog, &msgs[i])
		}
		f.fill()
	}
	f.mu.Unlock()
	f.setReady()
}

// endFlow forgets cl's flow.
func (b *Broker) endFlow(cl *mqtt.Client) {
	if f, ok := b.flows.LoadAndDelete(cl); ok {
		f.(*flow).end()
	}
}

func (b *Broker) flow(cl *mqtt.Client) *flow {
	if v, ok := b.flows.Load(cl); ok {
		return v.(*flow)
	}
	return nil
}

// readyWait bounds how long a delivery waits for a session to be
// established; the resend it waits for writes only a few small packets.
const readyWait = time.Second

// awaitReady holds a delivery to cl until cl's session is established (see
// flowReady), so that nothing is written between CONNACK and a resumed
// session's resend, and new messages queue behind the session's.
func (b *Broker) awaitReady(cl *mqtt.Client) {
	f := b.flow(cl)
	if f == nil {
		return
	}
	select {
	case <-f.ready:
		return
	default:
	}
	t := time.NewTimer(readyWait)
	defer t.Stop()
	select {
	case <-f.ready:
	case <-t.C:
	case <-b.stopping:
	}
}

// originalOrder sorts a session's in-flight messages into the order they
// were queued in. mochi's GetAll sorts them by their creation second modulo
// 65536 with an unstable sort, so messages queued in the same second come
// out shuffled — MQTT requires the original order [MQTT-4.6.0-1]; within a
// second, packet ids were given out in order (wrapping around 65535).
func originalOrder(msgs []packets.Packet) []packets.Packet {
	minID, maxID := uint16(65535), uint16(0)
	for _, pk := range msgs {
		minID, maxID = min(minID, pk.PacketID), max(maxID, pk.PacketID)
	}
	wrap := maxID-minID > 32768 // packet ids wrapped around 65535 within the session
	seq := func(id uint16) int {
		if wrap && id < 32768 {
			return int(id) + 65536
		}
		return int(id)
	}
	sort.SliceStable(msgs, func(i, j int) bool {
		a, b := msgs[i], msgs[j]
		if a.Created != b.Created {
			return a.Created < b.Created
		}
		return seq(a.PacketID) < seq(b.PacketID)
	})
	return msgs
}

// queuePollInterval is how often a publish waiting for a write queue checks
// it again. At 100k packets/s a subscriber drains 20 in that time; the low
// mark leaves it max_queued_messages/2 to send meanwhile.
const queuePollInterval = 200 * time.Microsecond

// waitForQueues waits until each subscriber of the plan (other than pub)
// and one member of each shared group has room in its write queue (see
// above).
func (h *policy) waitForQueues(pub *mqtt.Client, p *roomPlan) {
	if p.nobody {
		return
	}
	srv := h.srv()
	w := roomWait{h: h}
	defer w.stop()
	for _, id := range p.queues {
		if cl, ok := srv.Clients.Get(id); ok && cl != pub {
			if !h.waitQueues(pub, &w, cl) {
				return
			}
		}
	}
	var members []*mqtt.Client
	for _, ids := range p.queueGroups {
		members = appendClients(members[:0], srv, ids, pub)
		if len(members) > 0 && !h.waitQueues(pub, &w, members...) {
			return
		}
	}
}

// roomWait is the delivery_wait deadline of one waitForQueues, started on
// the first wait.
type roomWait struct {
	h     *policy
	timer *time.Timer
}

func (w *roomWait) deadline() <-chan time.Time {
	if w.timer == nil {
		w.h.b.deliveryWaits.Add(1)
		w.timer = time.NewTimer(*w.h.b.cfg.Limits.DeliveryWait)
	}
	return w.timer.C
}

// extend restarts the deadline: the subscribers waited for made progress.
func (w *roomWait) extend() {
	if w.timer != nil {
		w.timer.Reset(*w.h.b.cfg.Limits.DeliveryWait)
	}
}

func (w *roomWait) stop() {
	if w.timer != nil {
		w.timer.Stop()
	}
}

// waitQueues waits until one of the clients has room in its write queue (or
// is gone, or is not waited for). It returns false when the wait timed out
// or the broker is stopping. The deadline restarts whenever the clients
// were written another max_queued_messages/16 messages: a subscriber is
// given up when it does not take that many within delivery_wait, not
// merely because its queue took longer than that to drain (publishers
// faster than one subscriber's connection are paced, not cut off).
func (h *policy) waitQueues(pub *mqtt.Client, w *roomWait, cls ...*mqtt.Client) bool {
	high := h.b.cfg.Limits.MaxQueuedMessages
	mark := high // the first check; after a wait, the low mark
	step := int64(max(high/16, 1))
	var base int64 // messages written to cls when the deadline (re)started
	written := func() int64 {
		var n int64
		for _, cl := range cls {
			if f := h.b.flow(cl); f != nil {
				n += f.written.Load()
			}
		}
		return n
	}
	var tick *time.Ticker
	defer func() {
		if tick != nil {
			tick.Stop()
		}
	}()
	for {
		for _, cl := range cls {
			f := h.b.flow(cl)
			if f == nil || cl.Closed() || f.out == nil {
				return true // offline: messages queue in the session
			}
			n := f.queued()
			if f.stalled.Load() {
				if n > 0 {
					return true
				}
				if f.stalled.CompareAndSwap(true, false) {
					h.b.log.Info("subscriber caught up: publishers wait for it again", "client", cl.ID, "dropped", f.dropped.Swap(0))
				}
			}
			if n < mark {
				return true
			}
		}
		if tick == nil {
			if bc, ok := pub.Net.Conn.(*batchConn); ok {
				bc.release() // held acknowledgements leave before the publisher waits
			}
			tick = time.NewTicker(queuePollInterval)
			mark = high / 2
			base = written()
		}
		select {
		case <-tick.C:
			if n := written(); n-base >= step {
				base = n
				w.extend()
			}
		case <-w.deadline():
			h.giveUp(cls)
			return false
		case <-h.b.stopping:
			return false
		}
	}
}

// appendClients appends to dst the known clients among ids, other than pub.
func appendClients(dst []*mqtt.Client, srv *mqtt.Server, ids []string, pub *mqtt.Client) []*mqtt.Client {
	for _, id := range ids {
		if cl, ok := srv.Clients.Get(id); ok && cl != pub {
			dst = append(dst, cl)
		}
	}
	return dst
}

// giveUp ends a wait for clients whose queues stayed full for
// limits.delivery_wait: limits.when_queue_full applies to each of them,
// logged and counted (Stats.DeliveryWaitTimeout) once per change of state.
func (h *policy) giveUp(cls []*mqtt.Client) {
	for _, cl := range cls {
		f := h.b.flow(cl)
		if f == nil || !f.stalled.CompareAndSwap(false, true) {
			continue // another publisher gave up on it at the same time
		}
		h.b.deliveryTimeouts.Add(1)
		if h.b.cfg.Limits.WhenQueueFull == QueueFullDisconnect {
			h.b.slowDisconnects.Add(1)
			h.b.log.Warn("disconnecting a subscriber that is not keeping up: its queue stayed full for limits.delivery_wait",
				"client", cl.ID, "queued", f.queued(), "delivery_wait", *h.b.cfg.Limits.DeliveryWait)
			h.disconnect(cl)
			continue
		}
		f.dropped.Store(0)
		h.b.log.Warn("subscriber not keeping up: its queue stayed full for limits.delivery_wait; it loses what does not fit until it catches up",
			"client", cl.ID, "queued", f.queued(), "delivery_wait", *h.b.cfg.Limits.DeliveryWait)
	}
}

// disconnect ends a slow subscriber's connection with DISCONNECT 0x97
// (quota exceeded) for MQTT 5. A write blocked on a client that does not
// read gives up after 100ms, so the publisher calling this is not held.
func (h *policy) disconnect(cl *mqtt.Client) {
	if cl.Net.Conn != nil {
		_ = cl.Net.Conn.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	}
	_ = h.srv().DisconnectClient(cl, packets.ErrQuotaExceeded)
}
