package broker

import (
	"errors"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// policy is the mochi hook carrying fieldgate's rules: authentication and
// ACL, reserved client ids, the MQTT 5 keepalive limit, Ingress, delivery
// flow control (see delivery.go), shared-subscription selection and two
// MQTT 3.1.1 fixes.
type policy struct {
	mqtt.HookBase
	b *Broker
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
		mqtt.OnPacketSent,
		mqtt.OnPublish,
		mqtt.OnPublishDropped,
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
	ok := h.b.auth.Load().authenticate(string(pk.Connect.Username), pk.Connect.Password)
	if !ok {
		h.b.authFailures.Add(1)
		h.b.log.Debug("connection refused: bad credentials", "client", cl.ID, "username", string(pk.Connect.Username), "remote", cl.Net.Remote)
	}
	return ok
}

// OnACLCheck also runs for every delivery to a client (write false, from
// mochi's publishToClient), before mochi queues it: a delivery waits there
// until the client's session is established (see awaitReady).
func (h *policy) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if !write {
		h.b.awaitReady(cl)
	}
	ok := h.b.auth.Load().allowed(string(cl.Properties.Username), cl.ID, topic, write)
	if !ok {
		h.b.aclDenied.Add(1)
	}
	return ok
}

// OnPacketRead frees the client's window when it ends a QoS 1/2 flow of a
// message sent to it (see flow), before mochi processes the packet, and
// keeps mochi from refusing a SUBSCRIBE or UNSUBSCRIBE whose packet id
// equals that of a message in flight to the client (see flow.alias). It also
// answers a CONNECT with a bad protocol name or level the MQTT 3.1.1 way,
// CONNACK return code 0x01, instead of mochi's MQTT 5 code 0x82 that 3.1.1
// devices cannot parse. MQTT 5 CONNECTs are left to mochi.
func (h *policy) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	switch pk.FixedHeader.Type {
	case packets.Puback, packets.Pubcomp:
		if f := h.b.flow(cl); f != nil {
			f.release(pk.PacketID)
		}
		return pk, nil
	case packets.Pubrec:
		if f := h.b.flow(cl); f != nil && pk.ReasonCode >= packets.ErrUnspecifiedError.Code {
			f.release(pk.PacketID) // ends the flow [MQTT-4.3.3-4]
		}
		return pk, nil
	case packets.Subscribe, packets.Unsubscribe:
		if f := h.b.flow(cl); f != nil {
			f.alias(&pk)
		}
		return pk, nil
	}
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

// OnPacketEncode holds the client's window before a QoS 1/2 PUBLISH is
// written (see flow.acquire; this runs in the client's write loop), and
// counts a PUBREL resent to a resumed session in it, and gives a SUBACK or
// UNSUBACK the client's packet id back (see flow.alias). It also suppresses
// DISCONNECT packets to MQTT 3.1.1 clients (3.1.1 has no server DISCONNECT;
// mochi sends one on session take-over, refused publishes and shutdown):
// the connection is just closed. An encode of packet type 0 fails, so
// nothing is written.
func (h *policy) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	switch pk.FixedHeader.Type {
	case packets.Publish:
		if pk.FixedHeader.Qos > 0 {
			if f := h.b.flow(cl); f != nil {
				f.acquire(&pk)
			}
		}
	case packets.Pubrel:
		if f := h.b.flow(cl); f != nil {
			f.resent(&pk)
		}
	case packets.Suback, packets.Unsuback:
		if f := h.b.flow(cl); f != nil {
			f.unalias(&pk)
		}
	case packets.Disconnect:
		if cl.Properties.ProtocolVersion < 5 {
			pk.FixedHeader.Type = packets.Reserved
		}
	}
	return pk
}

// OnPacketSent writes out what mochi keeps in its write buffer when the
// client's write loop waits for an acknowledgement: an acknowledgement of
// the client's own publish, written meanwhile, must not wait for it.
// It also counts the PUBLISH packets written (see waitQueues).
func (h *policy) OnPacketSent(cl *mqtt.Client, pk packets.Packet, b []byte) {
	f := h.b.flow(cl)
	switch {
	case f == nil:
	case pk.FixedHeader.Type == packets.Publish:
		f.written.Add(1)
	case f.waiting.Load():
		_ = flushWrites(cl)
	}
}

// OnPublishDropped counts a delivery mochi dropped because the client's
// write queue was full (see giveUp).
func (h *policy) OnPublishDropped(cl *mqtt.Client, pk packets.Packet) {
	if f := h.b.flow(cl); f != nil {
		f.dropped.Add(1)
	}
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
// inherited and CONNACK is sent: it takes over delivery flow control from
// mochi (see delivery.go).
func (h *policy) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	resume := false
	if !pk.Connect.Clean {
		if old, ok := h.srv().Clients.Get(cl.ID); ok {
			// mochi's inheritClientSession: the session is taken over unless
			// the old one was a clean 3.1.1 session.
			resume = !(old.Properties.Clean && old.Properties.ProtocolVersion < 5)
		}
	}
	h.b.startFlow(cl, resume)
	if cl.Net.Conn != nil {
		h.b.conns.Store(cl.Net.Conn, cl)
	}
}

// OnSessionEstablished runs after mochi has sent CONNACK and resent the
// session's messages, before it reads from the client.
func (h *policy) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	h.b.flowReady(cl)
}

func (h *policy) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	h.b.endFlow(cl)
}

// OnSubscribed and OnUnsubscribed run after mochi has changed the topic
// index.
func (h *policy) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	h.b.rooms.invalidate()
}

func (h *policy) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) { h.b.rooms.invalidate() }

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
	h.waitForQueues(cl, h.b.rooms.plan(h.srv(), pk.TopicName))
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
		h.b.log.Warn("closing MQTT 3.1.1 connection: publish refused by ingress", "client", cl.ID, "topic", pk.TopicName, "error", err)
		if cl.Net.Conn != nil {
			_ = cl.Net.Conn.Close()
		}
	}
	return packets.ErrRejectPacket
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

// OnWill hands a will message to Ingress; the will is published locally
// whatever Ingress returns.
func (h *policy) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	if h.b.ingress == nil {
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
