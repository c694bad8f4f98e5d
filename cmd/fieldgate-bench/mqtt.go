package main

// A minimal MQTT 3.1.1 client made for counting: publishers keep a window of
// in-flight QoS 1/2 messages (packet ids are the window's tokens) and record
// exactly which sequence numbers were acknowledged; subscribers record which
// (publisher, sequence) pairs arrived, so duplicates and losses are exact.
// Writes are buffered and flushed only when the writer would block or the
// reader has nothing more to process, so the client itself is not the
// bottleneck it measures.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// MQTT 3.1.1 packet types (high nibble of the fixed header).
const (
	pktConnect    = 1
	pktConnack    = 2
	pktPublish    = 3
	pktPuback     = 4
	pktPubrec     = 5
	pktPubrel     = 6
	pktPubcomp    = 7
	pktSubscribe  = 8
	pktSuback     = 9
	pktPingresp   = 13
	pktDisconnect = 14
)

// payloadHeader is the size of the id+seq prefix of every bench payload.
const payloadHeader = 8

// errClosed is returned by operations on a client whose connection ended.
var errClosed = errors.New("mqtt: connection closed")

// tracker records which sequence numbers of each publisher were seen. It is
// used by one goroutine at a time (the reader that owns it, or the caller
// after that reader has returned); the counters are atomic so progress can be
// polled concurrently.
type tracker struct {
	bits   map[uint32][]uint64
	unique atomic.Int64
	dups   atomic.Int64
	last   atomic.Int64 // unix nanos of the last new arrival
}

func newTracker() *tracker { return &tracker{bits: map[uint32][]uint64{}} }

// mark records (pub, seq) and reports whether it was new.
func (t *tracker) mark(pub, seq uint32) bool {
	b := t.bits[pub]
	w := int(seq / 64)
	if w >= len(b) {
		nb := make([]uint64, max(w+1, 2*len(b)))
		copy(nb, b)
		b = nb
		t.bits[pub] = b
	}
	m := uint64(1) << (seq % 64)
	if b[w]&m != 0 {
		t.dups.Add(1)
		return false
	}
	b[w] |= m
	t.unique.Add(1)
	t.last.Store(time.Now().UnixNano())
	return true
}

// has reports whether (pub, seq) was recorded.
func (t *tracker) has(pub, seq uint32) bool {
	b := t.bits[pub]
	w := int(seq / 64)
	return w < len(b) && b[w]&(uint64(1)<<(seq%64)) != 0
}

// each calls f for every recorded (pub, seq).
func (t *tracker) each(f func(pub, seq uint32)) {
	for pub, b := range t.bits {
		for w, word := range b {
			for word != 0 {
				i := uint32(0)
				for word&(1<<i) == 0 {
					i++
				}
				f(pub, uint32(w)*64+i)
				word &^= 1 << i
			}
		}
	}
}

// client is one MQTT 3.1.1 connection. Publish is used by one goroutine; the
// reader goroutine started by dial handles acknowledgements and deliveries.
type client struct {
	conn net.Conn
	br   *bufio.Reader

	wmu sync.Mutex
	bw  *bufio.Writer

	ids     chan uint16     // free packet ids: the in-flight window
	pending []atomic.Uint32 // packet id → publisher seq (index by id)
	acked   *tracker        // seqs whose PUBACK/PUBCOMP arrived (publisher side)
	ackedN  atomic.Int64

	recv   *tracker // deliveries (subscriber side), nil for publishers
	suback chan struct{}

	done chan struct{} // closed when the reader returns
	err  error         // the reader's error, valid after done
}

// dialOpts configures one connection.
type dialOpts struct {
	addr     string
	clientID string
	clean    bool
	window   int      // in-flight QoS 1/2 publishes; 0 for subscribers
	recv     *tracker // where deliveries are recorded; nil for publishers
}

// dial connects, sends CONNECT, waits for CONNACK and starts the reader. The
// reader stops when the connection closes (close or ctx).
func dial(ctx context.Context, o dialOpts) (*client, error) {
	if err := checkLoopback(o.addr); err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", o.addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", o.addr, err)
	}
	c := &client{
		conn:   conn,
		br:     bufio.NewReaderSize(conn, 64<<10),
		bw:     bufio.NewWriterSize(conn, 64<<10),
		acked:  newTracker(),
		recv:   o.recv,
		suback: make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	if o.window > 0 {
		c.ids = make(chan uint16, o.window)
		for i := 1; i <= o.window; i++ {
			c.ids <- uint16(i)
		}
		c.pending = make([]atomic.Uint32, o.window+1)
	}
	flags := byte(0)
	if o.clean {
		flags |= 0x02
	}
	var body []byte
	body = appendString(body, "MQTT")
	body = append(body, 4, flags, 0, 0) // level 4, no keepalive
	body = appendString(body, o.clientID)
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(appendPacket(nil, pktConnect<<4, body)); err != nil {
		conn.Close()
		return nil, fmt.Errorf("connect %s: %w", o.addr, err)
	}
	h, b, err := readPacket(c.br)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("connack from %s: %w", o.addr, err)
	}
	if h>>4 != pktConnack || len(b) != 2 || b[1] != 0 {
		conn.Close()
		return nil, fmt.Errorf("connect %s: refused (header %#x body %x)", o.addr, h, b)
	}
	_ = conn.SetDeadline(time.Time{})
	go c.read()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	go func() { <-c.done; stop() }()
	return c, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func appendPacket(b []byte, header byte, body []byte) []byte {
	b = append(b, header)
	n := len(body)
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			break
		}
	}
	return append(b, body...)
}

// readPacket reads one packet; the body slice is valid until the next call.
func readPacket(r *bufio.Reader) (byte, []byte, error) {
	h, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for i := 0; ; i++ {
		d, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(d&0x7f) * mul
		mul *= 128
		if d&0x80 == 0 {
			break
		}
		if i == 3 {
			return 0, nil, errors.New("mqtt: malformed remaining length")
		}
	}
	if n <= r.Size() {
		b, err := r.Peek(n)
		if err != nil {
			return 0, nil, err
		}
		_, _ = r.Discard(n)
		return h, b, nil
	}
	b := make([]byte, n)
	_, err = io.ReadFull(r, b)
	return h, b, err
}

// read handles every incoming packet until the connection ends.
func (c *client) read() {
	defer close(c.done)
	var out []byte
	for {
		h, b, err := readPacket(c.br)
		if err != nil {
			c.err = err
			return
		}
		out = out[:0]
		switch h >> 4 {
		case pktPublish:
			qos := (h >> 1) & 3
			if len(b) < 2 {
				c.err = errors.New("mqtt: short publish")
				return
			}
			tl := int(binary.BigEndian.Uint16(b))
			p := 2 + tl
			var id uint16
			if qos > 0 {
				id = binary.BigEndian.Uint16(b[p:])
				p += 2
			}
			if payload := b[p:]; c.recv != nil && len(payload) >= payloadHeader {
				c.recv.mark(binary.BigEndian.Uint32(payload), binary.BigEndian.Uint32(payload[4:]))
			}
			switch qos {
			case 1:
				out = append(out, pktPuback<<4, 2, byte(id>>8), byte(id))
			case 2:
				out = append(out, pktPubrec<<4, 2, byte(id>>8), byte(id))
			}
		case pktPubrel:
			out = append(out, pktPubcomp<<4, 2, b[0], b[1])
		case pktPubrec:
			out = append(out, pktPubrel<<4|2, 2, b[0], b[1])
		case pktPuback, pktPubcomp:
			id := binary.BigEndian.Uint16(b)
			if int(id) < len(c.pending) {
				c.acked.mark(0, c.pending[id].Load())
				c.ackedN.Add(1)
				c.ids <- id
			}
		case pktSuback:
			if len(b) < 3 || b[2] == 0x80 {
				c.err = fmt.Errorf("mqtt: subscription refused (%x)", b)
				return
			}
			c.suback <- struct{}{}
		}
		if len(out) > 0 || c.br.Buffered() == 0 {
			c.wmu.Lock()
			if len(out) > 0 {
				_, err = c.bw.Write(out)
			}
			if err == nil && c.br.Buffered() == 0 && c.bw.Buffered() > 0 {
				err = c.bw.Flush()
			}
			c.wmu.Unlock()
			if err != nil {
				c.err = err
				return
			}
		}
	}
}

// subscribe subscribes to filter and waits for the SUBACK.
func (c *client) subscribe(filter string, qos byte) error {
	var body []byte
	body = binary.BigEndian.AppendUint16(body, 1)
	body = appendString(body, filter)
	body = append(body, qos)
	c.wmu.Lock()
	_, err := c.bw.Write(appendPacket(nil, pktSubscribe<<4|2, body))
	if err == nil {
		err = c.bw.Flush()
	}
	c.wmu.Unlock()
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", filter, err)
	}
	select {
	case <-c.suback:
		return nil
	case <-c.done:
		return fmt.Errorf("subscribe %s: %w", filter, c.readErr())
	case <-time.After(10 * time.Second):
		return fmt.Errorf("subscribe %s: no SUBACK within 10s", filter)
	}
}

func (c *client) readErr() error {
	if c.err == nil || errors.Is(c.err, net.ErrClosed) || errors.Is(c.err, io.EOF) {
		return errClosed
	}
	return fmt.Errorf("%w: %w", errClosed, c.err)
}

// publisher produces bench payloads for one publisher id.
type publisher struct {
	c     *client
	id    uint32
	topic string
	qos   byte
	buf   []byte
	pay   []byte
}

func newPublisher(c *client, id uint32, topic string, qos byte, size int) *publisher {
	return &publisher{c: c, id: id, topic: topic, qos: qos, pay: make([]byte, max(size, payloadHeader))}
}

// publish sends message seq. For QoS 1/2 it first takes a packet id from the
// window, flushing and blocking when the window is full.
func (p *publisher) publish(seq uint32) error {
	c := p.c
	var id uint16
	if p.qos > 0 {
		select {
		case id = <-c.ids:
		default:
			c.wmu.Lock()
			err := c.bw.Flush()
			c.wmu.Unlock()
			if err != nil {
				return fmt.Errorf("publish: %w", err)
			}
			select {
			case id = <-c.ids:
			case <-c.done:
				return c.readErr()
			}
		}
		c.pending[id].Store(seq)
	}
	binary.BigEndian.PutUint32(p.pay, p.id)
	binary.BigEndian.PutUint32(p.pay[4:], seq)
	b := p.buf[:0]
	n := 2 + len(p.topic) + len(p.pay)
	if p.qos > 0 {
		n += 2
	}
	b = append(b, pktPublish<<4|p.qos<<1)
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			break
		}
	}
	b = appendString(b, p.topic)
	if p.qos > 0 {
		b = append(b, byte(id>>8), byte(id))
	}
	b = append(b, p.pay...)
	p.buf = b
	c.wmu.Lock()
	_, err := c.bw.Write(b)
	c.wmu.Unlock()
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	return nil
}

// flush sends whatever is buffered.
func (c *client) flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.bw.Flush()
}

// waitAcked waits until every QoS 1/2 publish was acknowledged (the window is
// whole again) or the deadline passes.
func (c *client) waitAcked(window int, timeout time.Duration) error {
	if err := c.flush(); err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for len(c.ids) < window {
		select {
		case <-c.done:
			return c.readErr()
		case <-time.After(2 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d publishes unacknowledged after %s", window-len(c.ids), timeout)
		}
	}
	return nil
}

// close sends DISCONNECT, closes the connection and waits for the reader.
func (c *client) close() {
	c.wmu.Lock()
	_, _ = c.bw.Write([]byte{pktDisconnect << 4, 0})
	_ = c.bw.Flush()
	c.wmu.Unlock()
	c.conn.Close()
	<-c.done
}

// abort closes the connection without DISCONNECT and waits for the reader.
func (c *client) abort() {
	c.conn.Close()
	<-c.done
}
