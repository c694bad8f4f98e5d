package bridge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// link3 is an MQTT 3.1.1 connection (paho.mqtt.golang). Every connection
// uses a clean session: messages in flight when it drops are resent from
// the buffer by the next one.
type link3 struct {
	c        mqtt.Client
	conn     net.Conn // the raw connection (abort closes it)
	wb       *writeBuffer
	lostCh   chan struct{}
	lostOnce sync.Once
	onMsg    func(Message)
}

func connect3(ctx context.Context, conn net.Conn, p connectParams, timeout time.Duration) (*link3, error) {
	wb := newWriteBuffer(conn)
	l := &link3{conn: conn, wb: wb, lostCh: make(chan struct{}), onMsg: p.onMessage}
	opts := mqtt.NewClientOptions()
	// The broker URL only drives paho's bookkeeping: the connection itself
	// is the one already dialled (TCP, TLS or websocket) and handed over.
	opts.AddBroker("tcp://upstream")
	var once sync.Once
	opts.SetCustomOpenConnectionFn(func(*url.URL, mqtt.ClientOptions) (net.Conn, error) {
		var c net.Conn
		once.Do(func() { c = noWriteDeadline{wb} })
		if c == nil {
			return nil, errors.New("connection already used")
		}
		return c, nil
	})
	opts.SetProtocolVersion(4)
	opts.SetClientID(p.clientID)
	opts.SetUsername(p.username)
	opts.SetPassword(string(p.password))
	opts.SetCleanSession(true)
	opts.SetAutoReconnect(false)
	opts.SetConnectRetry(false)
	opts.SetKeepAlive(time.Duration(p.keepAlive) * time.Second)
	opts.SetConnectTimeout(timeout)
	// WriteTimeout bounds how long Publish waits to hand a packet to
	// paho's writer. It must be short: when the connection drops, a Publish
	// racing with the loss waits that long. Socket writes themselves have no
	// deadline (noWriteDeadline): slow links are fine, dead ones are found
	// by keepalive and stall detection.
	opts.SetWriteTimeout(3 * time.Second)
	opts.SetOrderMatters(true)
	if p.willTopic != "" {
		opts.SetBinaryWill(p.willTopic, []byte("offline"), 1, true)
	}
	opts.SetStore(mqtt.NewMemoryStore())
	opts.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
		p.onError(err)
		l.markLost()
	})
	opts.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
		l.onMsg(Message{Topic: m.Topic(), Payload: m.Payload(), QoS: m.Qos(), Retain: m.Retained(), Origin: Origin})
	})
	l.c = mqtt.NewClient(opts)
	tok := l.c.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		_ = conn.Close()
		<-tok.Done()
		l.c.Disconnect(0)
		_ = wb.Close()
		return nil, fmt.Errorf("connect: %w", ctx.Err())
	}
	if err := tok.Error(); err != nil {
		_ = conn.Close()
		_ = wb.Close()
		if r := refusal3(err, p.clientID); r != nil {
			return nil, r
		}
		return nil, fmt.Errorf("connect: %w", err)
	}
	return l, nil
}

func (l *link3) markLost() { l.lostOnce.Do(func() { close(l.lostCh) }) }

func (l *link3) publish(ctx context.Context, m *Message, seq uint64) (*flight, error) {
	tok := l.c.Publish(m.Topic, m.QoS, m.Retain, m.Payload)
	if m.QoS == 0 {
		select {
		case <-tok.Done():
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-l.lostCh:
			return nil, errors.New("connection lost")
		}
		if err := tok.Error(); err != nil {
			return nil, fmt.Errorf("publish %s: %w", m.Topic, err)
		}
		f := newFlight(seq, nil)
		f.complete(nil)
		return f, nil
	}
	// The token completes with an error only when the connection is lost
	// (3.1.1 has no negative acknowledgement); the drain then resends.
	return &flight{seq: seq, tok: tok}, nil
}

func (l *link3) subscribe(ctx context.Context, filters []string, qos []byte) error {
	m := make(map[string]byte, len(filters))
	for i, f := range filters {
		m[f] = qos[i]
	}
	tok := l.c.SubscribeMultiple(m, nil)
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	if st, ok := tok.(*mqtt.SubscribeToken); ok {
		for f, rc := range st.Result() {
			if rc >= 0x80 {
				return fmt.Errorf("subscribe %s: refused (%#x)", f, rc)
			}
		}
	}
	return nil
}

func (l *link3) lost() <-chan struct{} { return l.lostCh }

func (l *link3) close(graceful bool) {
	if graceful {
		// paho closes the writeBuffer after writing the DISCONNECT, which
		// flushes everything before it within flushTimeout.
		l.c.Disconnect(250)
	} else {
		_ = l.conn.Close()
		// paho's connection-lost path runs asynchronously; Disconnect
		// waits for its workers either way.
		l.c.Disconnect(0)
	}
	_ = l.wb.Close() // flushes (bounded), closes, waits for the writer goroutine
	l.markLost()
}

func (l *link3) abort() { _ = l.conn.Close() }

// noWriteDeadline hides SetWriteDeadline from paho.mqtt.golang.
type noWriteDeadline struct{ net.Conn }

func (noWriteDeadline) SetWriteDeadline(time.Time) error { return nil }

func (l *link3) receiveMaximum() int  { return 65535 }
func (l *link3) sessionPresent() bool { return false }
