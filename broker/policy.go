package broker

import (
	"errors"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// policy is the mochi hook carrying fieldgate's rules: authentication and
// ACL, reserved client ids, the MQTT 5 keepalive limit, Ingress, delivery
// flow control, shared-subscription selection and two MQTT 3.1.1 fixes.
//
// Delivery flow control (why QoS 1/2 messages were lost). mochi limits the
// QoS 1/2 messages in flight to a client to the client's Receive Maximum;
// beyond it a message is parked in the in-flight map and sent later, one per
// packet the client sends. That deferred path deletes the message from the
// in-flight map as soon as it is written. The packet id is then free while
// the client still holds the QoS 2 flow open, so a later message reuses it and
// the client discards it as a duplicate of an unreleased id (MQTT-4.3.3); the
// PUBACK of a deferred QoS 1 message finds nothing and never returns its send
// quota, so the client eventually stalls with messages parked until they
// expire. Further, a subscriber that falls behind its publishers loses QoS
// 1/2 messages once its in-flight map (max_inflight) or its write queue
// (max_queued_messages) is full.
//
// The policy therefore disables mochi's send quota for every client and
// applies back-pressure instead: before a QoS 1/2 publish is acknowledged
// (in OnPublish, after Ingress), it waits until every connected subscriber
// that will receive it at QoS 1/2 has fewer in-flight messages than the
// smaller of its Receive Maximum and max_inflight. Publishers are slowed to
// the pace of their subscribers rather than messages being dropped. A wait
// is bounded by limits.delivery_wait: then the message is delivered (a
// subscriber that is still full drops it, counted in Stats.MessagesDropped)
// and publishers stop waiting for that subscriber until it acknowledges a
// message again. A client is never made to wait for itself. Publishes also
// wait for room in their subscribers' write queues (see outbound.go), which
// keeps QoS 0 deliveries from being dropped. Several publishers can pass the check at
// the same moment, so a subscriber may briefly hold as many as that many
// messages over its Receive Maximum.
type policy struct {
	mqtt.HookBase
	b *Broker
}

// flow is the delivery state of one connected network client.
type flow struct {
	limit int // in-flight QoS 1/2 messages allowed towards the client
	// stalled is set when a publisher gave up waiting for this client; until
	// the client acknowledges something, publishers do not wait for it again
	// (a dead connection must not slow every publisher until its keepalive
	// runs out).
	stalled atomic.Bool
	mu      sync.Mutex
	wake    chan struct{} // closed on the next completion; nil if nobody waits
	// out is mochi's write queue of the client (nil if not found), and
	// queueStalled is set when a publisher gave up waiting for room in it,
	// until it is seen empty (see waitForQueues).
	out          chan *packets.Packet
	queueStalled atomic.Bool
}

func (f *flow) signal() {
	f.stalled.Store(false)
	f.mu.Lock()
	if f.wake != nil {
		close(f.wake)
		f.wake = nil
	}
	f.mu.Unlock()
}

func (f *flow) waitCh() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.wake == nil {
		f.wake = make(chan struct{})
	}
	return f.wake
}

func (h *policy) ID() string { return "fieldgate-policy" }

// Provides is asked by mochi for every hook and event of every packet, so
// it is a switch rather than a search.
func (h *policy) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnectAuthenticate,
		mqtt.OnACLCheck,
		mqtt.OnConnect,
		mqtt.OnSessionEstablish,
		mqtt.OnSessionEstablished,
		mqtt.OnDisconnect,
		mqtt.OnPacketRead,
		mqtt.OnPacketEncode,
		mqtt.OnPublish,
		mqtt.OnQosComplete,
		mqtt.OnQosDropped,
		mqtt.OnSelectSubscribers,
		mqtt.OnSubscribed,
		mqtt.OnUnsubscribed,
		mqtt.OnWill,
		mqtt.OnClientExpired:
		return true
	}
	return false
}

func (h *policy) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	return h.b.login(cl, pk) // guard.go
}

func (h *policy) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	return h.b.aclCheck(cl, topic, write) // guard.go
}

// OnPacketRead answers a CONNECT with a bad protocol name or level the MQTT
// 3.1.1 way, CONNACK return code 0x01, instead of mochi's MQTT 5 code 0x82
// that 3.1.1 devices cannot parse. MQTT 5 CONNECTs are left to mochi.
func (h *policy) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type != packets.Connect || pk.ProtocolVersion == 5 {
		return pk, nil
	}
	name := string(pk.Connect.ProtocolName)
	if (name == "MQTT" && pk.ProtocolVersion == 4) || (name == "MQIsdp" && pk.ProtocolVersion == 3) {
		return pk, nil
	}
	_ = cl.WritePacket(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connack},
		ReasonCode:  packets.Err3UnsupportedProtocolVersion.Code,
	})
	return pk, packets.ErrRejectPacket // ends the connection
}

// OnPacketEncode suppresses DISCONNECT packets to MQTT 3.1.1 clients (3.1.1
// has no server DISCONNECT; mochi sends one on session take-over, refused
// publishes and shutdown): the connection is just closed. An encode of
// packet type 0 fails, so nothing is written. It also puts resent in-flight
// messages back in their original order (see resendPlan).
func (h *policy) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Disconnect && cl.Properties.ProtocolVersion < 5 {
		pk.FixedHeader.Type = packets.Reserved
	}
	if v, ok := h.b.resends.Load(cl); ok {
		return v.(*resendPlan).substitute(pk, func() { h.b.resends.Delete(cl) })
	}
	return pk
}

// resendPlan restores the order of messages resent to a resumed session.
// mochi resends a session's in-flight messages sorted by their creation
// second modulo 65536, with an unstable sort, so messages queued in the same
// second come out shuffled — MQTT requires the original order
// [MQTT-4.6.0-1]. The plan holds the same messages in their original order;
// as mochi writes each one, the next in order is written in its place.
type resendPlan struct {
	mu      sync.Mutex
	queue   []packets.Packet       // in original order
	pending map[[2]uint16]struct{} // {type, packet id} mochi has yet to write
}

func resendKey(pk packets.Packet) [2]uint16 {
	return [2]uint16{uint16(pk.FixedHeader.Type), pk.PacketID}
}

func newResendPlan(inflight []packets.Packet) *resendPlan {
	minID, maxID := uint16(65535), uint16(0)
	for _, pk := range inflight {
		minID, maxID = min(minID, pk.PacketID), max(maxID, pk.PacketID)
	}
	wrap := maxID-minID > 32768 // packet ids wrapped around 65535 within the session
	seq := func(id uint16) int {
		if wrap && id < 32768 {
			return int(id) + 65536
		}
		return int(id)
	}
	sort.SliceStable(inflight, func(i, j int) bool {
		a, b := inflight[i], inflight[j]
		if a.Created != b.Created {
			return a.Created < b.Created
		}
		return seq(a.PacketID) < seq(b.PacketID)
	})
	p := &resendPlan{queue: inflight, pending: make(map[[2]uint16]struct{}, len(inflight))}
	for _, pk := range inflight {
		p.pending[resendKey(pk)] = struct{}{}
	}
	return p
}

func (p *resendPlan) substitute(pk packets.Packet, done func()) packets.Packet {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := resendKey(pk)
	if _, ok := p.pending[k]; !ok || len(p.queue) == 0 {
		return pk
	}
	delete(p.pending, k)
	next := p.queue[0]
	p.queue = p.queue[1:]
	if len(p.queue) == 0 {
		done()
	}
	if next.FixedHeader.Type == packets.Publish {
		next.FixedHeader.Dup = true // [MQTT-3.3.1-1]
	}
	// Carry over what WritePacket computed for this connection.
	next.ProtocolVersion = pk.ProtocolVersion
	next.Mods = pk.Mods
	if next.Expiry > 0 {
		next.Properties.MessageExpiryInterval = uint32(max(next.Expiry-time.Now().Unix(), 1))
	}
	return next
}

func (h *policy) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if strings.HasPrefix(cl.ID, InProcessPrefix) || cl.ID == mqtt.InlineClientId {
		_ = h.srv().SendConnack(cl, packets.ErrClientIdentifierNotValid, false, nil)
		return packets.ErrClientIdentifierNotValid
	}
	if cl.Properties.ProtocolVersion == 5 {
		maxKA := uint16(h.b.cfg.Limits.MaxKeepalive / time.Second)
		if cl.State.Keepalive == 0 || cl.State.Keepalive > maxKA {
			cl.State.Keepalive = maxKA
			cl.State.ServerKeepalive = true // announced in CONNACK
		}
	}
	return nil
}

// OnSessionEstablish runs after authentication, before the session is
// inherited and CONNACK is sent: it takes over flow control from mochi.
func (h *policy) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	if !pk.Connect.Clean {
		h.b.dropDenied(cl) // guard.go
		if old, ok := h.srv().Clients.Get(cl.ID); ok && old.State.Inflight.Len() > 0 {
			h.b.resends.Store(cl, newResendPlan(old.State.Inflight.GetAll(false)))
		}
	}
	limit := int(cl.Properties.Props.ReceiveMaximum) // already capped at max_inflight
	if limit == 0 {
		limit = h.b.cfg.Limits.MaxInflight // absent: 65535 by the spec
	}
	cl.Properties.Props.ReceiveMaximum = 0 // mochi resets the send quota from this on take-over
	cl.State.Inflight.ResetSendQuota(0)    // 0 disables mochi's deferred sending
	if old, loaded := h.b.flows.Swap(cl, &flow{limit: limit, out: outboundQueue(cl)}); loaded {
		old.(*flow).signal()
	}
	if cl.Net.Conn != nil {
		h.b.conns.Store(cl.Net.Conn, cl)
	}
}

// OnSessionEstablished runs after mochi has resent the session's messages.
func (h *policy) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	h.b.resends.Delete(cl)
}

func (h *policy) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	if f, ok := h.b.flows.LoadAndDelete(cl); ok {
		f.(*flow).signal()
	}
}

// OnSubscribed and OnUnsubscribed run after mochi has changed the topic
// index.
func (h *policy) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	h.b.rooms.invalidate()
}

func (h *policy) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) { h.b.rooms.invalidate() }

func (h *policy) OnQosComplete(cl *mqtt.Client, pk packets.Packet) { h.signal(cl) }

func (h *policy) OnQosDropped(cl *mqtt.Client, pk packets.Packet) { h.signal(cl) }

func (h *policy) signal(cl *mqtt.Client) {
	if f, ok := h.b.flows.Load(cl); ok {
		f.(*flow).signal()
	}
}

// OnClientExpired also drops the expired session's subscriptions and queued
// messages (mochi only forgets the client), so the store is cleaned too.
func (h *policy) OnClientExpired(cl *mqtt.Client) {
	h.srv().UnsubscribeClient(cl)
	cl.ClearInflights()
}

func (h *policy) srv() *mqtt.Server { return h.b.srv.Load() }

// OnPublish runs for every accepted publish before it is acknowledged or
// delivered: Ingress for network clients (in-process Publish calls Ingress
// itself), then back-pressure. A publish handed back by a client's ingress
// line is durable already, and the line has waited for room.
func (h *policy) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	switch {
	case isIngested(&pk):
		pk.Filters = nil
		return pk, nil
	case !cl.Net.Inline && h.b.ingress != nil:
		queued, err := h.b.ingestNetwork(cl, &pk)
		if err != nil {
			return pk, h.reject(cl, pk, err)
		}
		if queued {
			return takeOver(pk), nil // the line acknowledges and delivers it
		}
	}
	p := h.b.rooms.plan(h.srv(), pk.TopicName)
	if pk.FixedHeader.Qos > 0 {
		h.waitForRoomPlan(cl, p)
	}
	h.waitForQueues(cl, p, pk.FixedHeader.Qos)
	return pk, nil
}

// takeOver returns what OnPublish hands back to mochi for a publish the
// client's ingress line has taken: a QoS 0, not retained, ignored copy, for
// which mochi's processPublish acknowledges nothing, retains nothing and
// publishes to no one (publishToSubscribers returns at once for an ignored
// packet). The obvious packets.ErrRejectPacket does the same but costs
// mochi a copy of the whole packet on the heap for a Debug log line that it
// builds whether or not Debug is enabled — the largest allocation of every
// durable publish.
func takeOver(pk packets.Packet) packets.Packet {
	return packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish},
		TopicName:   pk.TopicName,
		Origin:      pk.Origin,
		Created:     pk.Created,
		Ignore:      true,
	}
}

// reject answers a publish that Ingress refused (see Options.Ingress).
func (h *policy) reject(cl *mqtt.Client, pk packets.Packet, err error) error {
	h.b.ingressRejected.Add(1)
	switch {
	case pk.FixedHeader.Qos == 0:
		h.b.log.Debug("qos 0 publish dropped by ingress", "client", cl.ID, "topic", pk.TopicName, "error", err)
	case cl.Properties.ProtocolVersion == 5:
		code := packets.ErrUnspecifiedError
		if errors.Is(err, ErrQuotaExceeded) {
			code = packets.ErrQuotaExceeded
		}
		ack := packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Puback},
			PacketID:    pk.PacketID,
			ReasonCode:  code.Code,
			Properties:  packets.Properties{ReasonString: code.Reason},
		}
		if pk.FixedHeader.Qos == 2 {
			ack.FixedHeader.Type = packets.Pubrec // ends the QoS 2 flow [MQTT-4.3.3-4]
		}
		h.b.log.Debug("publish refused by ingress", "client", cl.ID, "topic", pk.TopicName, "reason", code.Code, "error", err)
		_ = cl.WritePacket(ack)
	default:
		// MQTT 3.1.1 has no negative acknowledgement: close the connection
		// unacknowledged so the client re-sends after reconnecting. Closing
		// the socket (not cl.Stop) makes mochi see an abnormal disconnect
		// and publish the will.
		h.b.refusal(cl.ID, cl.Net.Remote, "closing MQTT 3.1.1 connection: publish refused by ingress", "client", cl.ID, "topic", pk.TopicName, "", err.Error())
		if cl.Net.Conn != nil {
			_ = cl.Net.Conn.Close()
		}
	}
	return packets.ErrRejectPacket
}

// waitForRoomPlan blocks until every connected subscriber that will receive
// a QoS 1/2 message on the plan's topic has room in flight (see policy). The
// subscribers come from a per-topic cache (roomCache); when all have room it
// neither allocates nor starts a timer.
func (h *policy) waitForRoomPlan(pub *mqtt.Client, p *roomPlan) {
	srv := h.srv()
	w := roomWait{h: h}
	defer w.stop()
	for _, id := range p.clients {
		if cl, ok := srv.Clients.Get(id); ok && cl != pub {
			if !h.waitClients(pub, &w, cl) {
				return
			}
		}
	}
	var members []*mqtt.Client
	for _, ids := range p.groups {
		members = appendClients(members[:0], srv, ids, pub)
		if !h.waitClients(pub, &w, members...) {
			return
		}
	}
}

// roomWait is the delivery_wait deadline of one waitForRoom, started on the
// first wait.
type roomWait struct {
	h     *policy
	timer *time.Timer
}

func (w *roomWait) deadline() <-chan time.Time {
	if w.timer == nil {
		w.h.b.deliveryWaits.Add(1)
		w.timer = time.NewTimer(w.h.b.cfg.Limits.DeliveryWait)
	}
	return w.timer.C
}

func (w *roomWait) stop() {
	if w.timer != nil {
		w.timer.Stop()
	}
}

// waitClients waits until one of the clients has room (or is gone). It
// returns false when the wait timed out or the broker is stopping. pub's
// held acknowledgements are written before it blocks (see batchConn).
func (h *policy) waitClients(pub *mqtt.Client, w *roomWait, cls ...*mqtt.Client) bool {
	for {
		var wake <-chan struct{}
		for _, cl := range cls {
			f, ok := h.b.flows.Load(cl)
			if !ok || cl.Closed() {
				return true // offline: messages queue in the session
			}
			ff := f.(*flow)
			if ff.stalled.Load() || cl.State.Inflight.Len() < ff.limit {
				return true
			}
			ch := ff.waitCh() // then check again: a completion may have come in between
			if cl.State.Inflight.Len() < ff.limit {
				return true
			}
			if wake == nil {
				wake = ch
			}
		}
		if wake == nil {
			return true
		}
		if bc, ok := pub.Net.Conn.(*batchConn); ok {
			bc.release()
		}
		var poll <-chan time.Time
		var t *time.Timer
		if len(cls) > 1 { // wake only follows the first member; poll the rest
			t = time.NewTimer(20 * time.Millisecond)
			poll = t.C
		}
		ok := true
		select {
		case <-wake:
		case <-poll:
		case <-w.deadline():
			h.giveUp(cls, func(f *flow) *atomic.Bool { return &f.stalled },
				"subscriber not keeping up: delivering without waiting until it acknowledges again; its queue may drop messages")
			ok = false
		case <-h.b.stopping:
			ok = false
		}
		if t != nil {
			t.Stop()
		}
		if !ok {
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

// giveUp ends a delivery wait that reached limits.delivery_wait: it counts
// it, sets the flag mark picks in each client's flow, so that publishers stop
// waiting for them, and logs msg.
func (h *policy) giveUp(cls []*mqtt.Client, mark func(*flow) *atomic.Bool, msg string) {
	h.b.deliveryTimeouts.Add(1)
	for _, cl := range cls {
		if f, found := h.b.flows.Load(cl); found {
			mark(f.(*flow)).Store(true)
		}
	}
	h.b.log.Warn(msg, "clients", clientIDs(cls))
}

func clientIDs(cls []*mqtt.Client) []string {
	ids := make([]string, len(cls))
	for i, cl := range cls {
		ids[i] = cl.ID
	}
	return ids
}

// OnSelectSubscribers picks, in each shared-subscription group, the
// connected member with the fewest messages in flight plus packets in its
// write queue (mochi picks at random, disconnected members included): a
// member that stopped reading is not picked once its queue fills, which a
// QoS 0 publish waits for (see waitForQueues).
func (h *policy) OnSelectSubscribers(subs *mqtt.Subscribers, pk packets.Packet) *mqtt.Subscribers {
	srv := h.srv()
	for _, group := range subs.Shared {
		best, bestLoad := "", 0
		var bestSub packets.Subscription
		for id, sub := range group {
			load := 1 << 30
			if cl, ok := srv.Clients.Get(id); ok && !cl.Closed() {
				load = cl.State.Inflight.Len()
				if f, ok := h.b.flows.Load(cl); ok {
					load += len(f.(*flow).out) // 0 for a nil channel
				}
			}
			if best == "" || load < bestLoad {
				best, bestLoad, bestSub = id, load, sub
			}
		}
		if best == "" {
			continue
		}
		if cur, ok := subs.SharedSelected[best]; ok {
			bestSub = cur.Merge(bestSub)
		}
		subs.SharedSelected[best] = bestSub
	}
	return subs
}

// OnWill checks a will against the ACL in force (a denied one is diverted
// and not ingested, see checkWill), then hands it to Ingress; an allowed
// will is published locally whatever Ingress returns.
func (h *policy) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	will, ok := h.b.checkWill(cl, will) // guard.go
	if !ok || h.b.ingress == nil {
		return will, nil
	}
	m := Message{
		Topic:   will.TopicName,
		Payload: will.Payload,
		QoS:     will.Qos,
		Retain:  will.Retain,
		Origin:  cl.ID,
	}
	m.Username = string(cl.Properties.Username)
	for _, u := range will.User {
		m.UserProperties = append(m.UserProperties, UserProperty{Key: u.Key, Value: u.Val})
	}
	if err := h.b.ingestSync(&m); err != nil {
		h.b.ingressRejected.Add(1)
		h.b.log.Warn("will message refused by ingress; published locally only", "client", cl.ID, "topic", will.TopicName, "error", err)
	}
	return will, nil
}
