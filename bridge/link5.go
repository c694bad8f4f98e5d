package bridge

import (
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session"
	"github.com/eclipse/paho.golang/paho/session/state"
	"github.com/eclipse/paho.golang/paho/store/file"
	"github.com/eclipse/paho.golang/paho/store/memory"
)

// link is one established upstream connection (MQTT 5 or 3.1.1).
type link interface {
	// publish sends m after everything previously passed to publish on
	// this link (the caller serialises calls). For QoS 0 the returned
	// flight is already complete once written.
	// seq is the buffer record carried (0 for status messages).
	publish(ctx context.Context, m *Message, seq uint64) (*flight, error)
	subscribe(ctx context.Context, filters []string, qos []byte) error
	// lost is closed when the connection is gone.
	lost() <-chan struct{}
	// close ends the connection: gracefully (DISCONNECT, no will) or by
	// closing the socket (the will is then published by the upstream).
	close(graceful bool)
	// abort closes the socket (idempotent); it unblocks pending writes.
	abort()
	receiveMaximum() int
	// sessionPresent reports whether the upstream resumed the previous
	// session, i.e. whether messages in flight on the previous connection
	// are being completed by this one.
	sessionPresent() bool
}

// session5 wraps paho's session state to learn, per packet identifier, when
// a PUBLISH sent by link5.publish is fully acknowledged
// (PUBACK, PUBCOMP, or a failing PUBREC). The state itself (packet ids,
// stored PUBLISH and PUBREL packets) survives reconnects because the same
// session5 is used by every client of one Bridge.
type session5 struct {
	*state.State
	store *sessionStore // nil: the session lives in memory only

	addMu   sync.Mutex // serialises AddToSession when store is set
	mu      sync.Mutex
	pending []*flight // by packet identifier (a map costs more with this churn)
	// progress is signalled when a flight completes (see flight).
	progress chan struct{}
}

// newSession5 returns a session kept in memory (dir == "") or persisted
// under dir.
func newSession5(dir string) (*session5, error) {
	s := &session5{pending: make([]*flight, 1<<16), progress: make(chan struct{}, 1)}
	if dir == "" {
		// Our store in memory: it keeps packets without encoding them.
		cs := &sessionStore{entries: make(map[uint16]storeEntry)}
		s.State = state.New(cs, memory.New())
		return s, nil
	}
	cs, err := openSessionStore(filepath.Join(dir, "client"))
	if err != nil {
		return nil, err
	}
	ss, err := file.New(filepath.Join(dir, "server"), "srv-", ".pkt")
	if err != nil {
		return nil, fmt.Errorf("session store: %w", err)
	}
	s.store, s.State = cs, state.New(cs, ss)
	return s, nil
}

func (s *session5) AddToSession(ctx context.Context, p session.Packet, resp chan<- packets.ControlPacket) error {
	return s.add(ctx, p, resp, nil)
}

// add is AddToSession for a packet carrying flight f (nil: none): the
// state assigns the packet identifier and stores the packet; f is then
// completed by PacketReceived.
func (s *session5) add(ctx context.Context, p session.Packet, resp chan<- packets.ControlPacket, f *flight) error {
	if s.store != nil && f != nil {
		// The store learns which record the packet carries.
		s.addMu.Lock()
		defer s.addMu.Unlock()
		s.store.setNext(f.seq)
	}
	if err := s.State.AddToSession(ctx, p, resp); err != nil {
		return err
	}
	if f != nil {
		if pub, ok := p.(*packets.Publish); ok {
			s.mu.Lock()
			s.pending[pub.PacketID] = f
			s.mu.Unlock()
		}
	}
	return nil
}

func (s *session5) PacketReceived(recv *packets.ControlPacket, pubChan chan<- *packets.Publish) error {
	// Look the flight up before the state frees the packet identifier, so a
	// concurrent AddToSession cannot reuse it in between.
	var f *flight
	var res error
	take := func(id uint16) {
		s.mu.Lock()
		f = s.pending[id]
		s.pending[id] = nil
		s.mu.Unlock()
	}
	switch p := recv.Content.(type) {
	case *packets.Puback:
		take(p.PacketID)
		if p.ReasonCode >= 0x80 {
			res = refusal("PUBACK", p.ReasonCode, p.Reason())
		}
	case *packets.Pubrec:
		if p.ReasonCode >= 0x80 {
			take(p.PacketID)
			res = refusal("PUBREC", p.ReasonCode, p.Reason())
		}
	case *packets.Pubcomp:
		// 0x92 (packet id not found) still means the PUBREC was
		// received: the upstream has the message.
		take(p.PacketID)
	}
	err := s.State.PacketReceived(recv, pubChan)
	if f != nil {
		f.complete(res)
	}
	return err
}

// refusal classifies a negative PUBACK/PUBREC: quota exceeded (0x97) and
// packet identifier in use (0x91) are worth retrying; anything else (not
// authorized, topic name invalid, payload format invalid, …) will not
// change by resending, so the message is dropped and counted.
func refusal(packet string, code byte, reason string) error {
	class := errRejected
	if code == 0x97 || code == 0x91 {
		class = errRetry
	}
	return fmt.Errorf("%w: %s reason %#x %s", class, packet, code, reason)
}

func (s *session5) ConAckReceived(w io.Writer, cp *packets.Connect, ca *packets.Connack) error {
	if !ca.SessionPresent {
		s.mu.Lock()
		clear(s.pending)
		s.mu.Unlock()
	}
	return s.State.ConAckReceived(w, cp, ca)
}

// link5 is an MQTT 5 connection (paho.golang).
type link5 struct {
	c       *paho.Client
	sess    *session5
	pinger  *paho.DefaultPinger // told about the packets publish writes
	conn    net.Conn            // the raw connection (abort closes it)
	wb      *writeBuffer
	recvMax int
	present bool
	// From the CONNACK: what the upstream accepts.
	maxQoS   byte
	retainOK bool
}

type connectParams struct {
	clientID   string
	username   string
	password   []byte
	keepAlive  uint16
	cleanStart bool
	expiry     uint32
	willTopic  string // "" for no will (Probe)
	onMessage  func(m Message)
	onError    func(error)
}

func connect5(ctx context.Context, conn net.Conn, s *session5, p connectParams) (*link5, error) {
	wb := newWriteBuffer(conn)
	pinger := paho.NewDefaultPinger()
	cfg := paho.ClientConfig{
		ClientID:    p.clientID,
		Conn:        wb,
		Session:     s,
		PingHandler: pinger,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			p.onMessage(fromPaho5(pr.Packet))
			return true, nil
		}},
		OnClientError: p.onError,
		OnServerDisconnect: func(d *paho.Disconnect) {
			r := &RefusedError{Packet: "DISCONNECT", Code: d.ReasonCode, ClientID: p.clientID}
			if d.Properties != nil {
				r.Reason = d.Properties.ReasonString
			}
			p.onError(r)
		},
	}
	c := paho.NewClient(cfg)
	cp := &paho.Connect{
		ClientID:   p.clientID,
		KeepAlive:  p.keepAlive,
		CleanStart: p.cleanStart,
		Username:   p.username,
		Password:   p.password,
		Properties: &paho.ConnectProperties{},
	}
	if p.willTopic != "" {
		cp.WillMessage = &paho.WillMessage{Retain: true, QoS: 1, Topic: p.willTopic, Payload: []byte("offline")}
	}
	cp.UsernameFlag = p.username != ""
	cp.PasswordFlag = len(p.password) > 0
	if p.expiry > 0 {
		cp.Properties.SessionExpiryInterval = &p.expiry
	}
	ca, err := c.Connect(ctx, cp)
	if err != nil {
		_ = wb.Close()
		if ca != nil && ca.ReasonCode >= 0x80 {
			r := &RefusedError{Packet: "CONNACK", Code: ca.ReasonCode, ClientID: p.clientID}
			if ca.Properties != nil {
				r.Reason = ca.Properties.ReasonString
			}
			return nil, r
		}
		return nil, fmt.Errorf("connect: %w", err)
	}
	l := &link5{c: c, sess: s, pinger: pinger, conn: conn, wb: wb, recvMax: 65535, present: ca.SessionPresent, maxQoS: 2, retainOK: true}
	if pr := ca.Properties; pr != nil {
		if pr.ReceiveMaximum != nil && *pr.ReceiveMaximum > 0 {
			l.recvMax = int(*pr.ReceiveMaximum)
		}
		if pr.MaximumQoS != nil {
			l.maxQoS = *pr.MaximumQoS
		}
		l.retainOK = pr.RetainAvailable
	}
	return l, nil
}

// publish sends m without paho's Client.Publish, which creates a context
// with a timeout per QoS 1/2 message that nothing here needs (the drain
// does not wait for the publish call but for the flight, and has its own
// stall detection) and converts the message into its own packet type.
// The packet goes through the same session (packet identifier, store,
// Receive Maximum quota), the same encoder and the same connection writer
// as paho's own publishes; paho's checks against the CONNACK are made here, and its
// keepalive is told about each packet as paho would.
//
// ctx bounds the wait for a Receive Maximum slot (the drain never waits:
// its window is at most the Receive Maximum). The drain passes a context
// without cancellation (a cancellable one costs a registration per
// message): the wait then ends when the connection is lost, which
// shutdown brings about by closing the socket after its grace period.
func (l *link5) publish(ctx context.Context, m *Message, seq uint64) (*flight, error) {
	pb := &packets.Publish{QoS: m.QoS, Retain: m.Retain, Topic: m.Topic, Payload: m.Payload}
	if m.ContentType != "" || m.ResponseTopic != "" || m.CorrelationData != nil || m.MessageExpiry > 0 || len(m.UserProperties) > 0 {
		// Without properties none are allocated (most messages).
		props := &packets.Properties{
			ContentType:     m.ContentType,
			ResponseTopic:   m.ResponseTopic,
			CorrelationData: m.CorrelationData,
		}
		if m.MessageExpiry > 0 {
			e := m.MessageExpiry
			props.MessageExpiry = &e
		}
		for _, up := range m.UserProperties {
			props.User = append(props.User, packets.User{Key: up.Key, Value: up.Value})
		}
		pb.Properties = props
	}
	switch {
	case m.QoS > l.maxQoS:
		return nil, fmt.Errorf("publish %s: QoS %d, upstream maximum QoS is %d", m.Topic, m.QoS, l.maxQoS)
	case m.Retain && !l.retainOK:
		return nil, fmt.Errorf("publish %s: retained, upstream does not support retained messages", m.Topic)
	}
	if m.QoS == 0 {
		if err := l.write(pb); err != nil {
			return nil, fmt.Errorf("publish %s: %w", m.Topic, err)
		}
		f := newFlight(seq, nil)
		f.complete(nil)
		return f, nil
	}
	f := newFlight(seq, l.sess.progress)
	// The state sends the final acknowledgement to resp too; PacketReceived
	// completes f from the same packet, so resp is only drained by GC.
	resp := make(chan packets.ControlPacket, 1)
	if err := l.sess.add(ctx, pb, resp, f); err != nil {
		return nil, fmt.Errorf("publish %s: %w", m.Topic, err)
	}
	// A write error means the connection is lost (the writer closes it):
	// the packet is in the session, completed by a resumed session or, if
	// the session is not resumed, resent from the buffer.
	_ = l.write(pb)
	return f, nil
}

// write sends pb with paho's encoder (which holds the writeBuffer's packet
// lock around the packet) and tells paho's keepalive, as paho's own
// publish would. Encoding the header by hand saved no measurable CPU
// (bridge BenchmarkDrain, mqtt5: 18.7–22.7 against 21.1–22.1 µs/msg).
func (l *link5) write(pb *packets.Publish) error {
	if _, err := pb.WriteTo(l.wb); err != nil {
		return err
	}
	l.pinger.PacketSent()
	return nil
}

func (l *link5) subscribe(ctx context.Context, filters []string, qos []byte) error {
	s := &paho.Subscribe{}
	for i, f := range filters {
		s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: qos[i], NoLocal: true})
	}
	sa, err := l.c.Subscribe(ctx, s)
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	for i, rc := range sa.Reasons {
		if rc >= 0x80 && i < len(filters) {
			return fmt.Errorf("subscribe %s: refused with reason %#x", filters[i], rc)
		}
	}
	return nil
}

func (l *link5) lost() <-chan struct{} { return l.c.Done() }

func (l *link5) close(graceful bool) {
	if graceful {
		// Disconnect closes the writeBuffer, which flushes the DISCONNECT
		// (and anything before it) within flushTimeout.
		_ = l.c.Disconnect(&paho.Disconnect{ReasonCode: 0})
	}
	_ = l.conn.Close()
	<-l.c.Done()
	_ = l.wb.Close() // waits for the writer goroutine
}

func (l *link5) abort() { _ = l.conn.Close() }

func (l *link5) receiveMaximum() int  { return l.recvMax }
func (l *link5) sessionPresent() bool { return l.present }

func fromPaho5(p *paho.Publish) Message {
	m := Message{Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain, Origin: Origin}
	if pp := p.Properties; pp != nil {
		m.ContentType = pp.ContentType
		m.ResponseTopic = pp.ResponseTopic
		m.CorrelationData = pp.CorrelationData
		if pp.MessageExpiry != nil {
			m.MessageExpiry = *pp.MessageExpiry
		}
		for _, up := range pp.User {
			m.UserProperties = append(m.UserProperties, UserProperty{Key: up.Key, Value: up.Value})
		}
	}
	return m
}
