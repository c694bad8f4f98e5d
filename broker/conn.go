package broker

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// batchConn is the net.Conn mochi gets for a network client. It makes the
// acknowledgements a client's packets produce cost one write for a batch
// instead of one write (one syscall) each, and it stops mochi from
// re-arming the connection's deadline on every packet.
//
// Acknowledgements. mochi's reading goroutine answers every QoS 1/2 packet
// at once, with its own write: a publisher keeping 100 messages in flight
// caused 100 write syscalls per 100 messages, the largest single cost of a
// QoS 1 publish. batchConn holds back a write that is exactly one
// acknowledgement (PUBACK, PUBREC, PUBREL, PUBCOMP) while the reading
// goroutine is working through input it has already read ("active": between
// two Reads), and writes the held bytes
//
//   - before the reading goroutine reads from the network again (so every
//     acknowledgement is on the wire before the broker waits for the client),
//   - ahead of any other write (bytes leave in the order they were written),
//   - when release is called (before the reading goroutine blocks on
//     something other than the client, see policy.waitClients),
//   - when more than maxHeldAcks bytes are held, and on Close,
//   - and at the latest maxHold after the first of them was held, whatever
//     the reading goroutine is doing (say, waiting for the disk, or an
//     acknowledgement written by another goroutine while it was active).
//
// An acknowledgement is held only while the reading goroutine processes
// packets it has already read, and never longer than maxHold; nothing else
// is delayed. The reading goroutine never waits for another goroutine's
// write (with a client that does not read while it writes, that could
// deadlock): if a write is in progress when it is about to read, the writer
// sends the held bytes when it is done, or, if the reading goroutine is
// active again by then, they go out before its next read or after maxHold.
//
// Deadlines. mochi calls SetDeadline(now + 1.5×keepalive) before every
// packet it reads; batchConn arms a later deadline deadlineSlack later than
// asked and skips the calls that would move it by less, so a silent client
// is disconnected at most deadlineSlack later than MQTT requires. An earlier
// deadline is set exactly.
type batchConn struct {
	net.Conn

	wmu sync.Mutex // held while writing to Conn

	mu     sync.Mutex
	held   []byte      // acknowledgements not yet written
	spare  []byte      // the previous held buffer, reused
	active bool        // the reading goroutine is between two Reads
	err    error       // the first write error; every later write fails with it
	late   *time.Timer // writes held bytes maxHold after the first was held

	armed atomic.Int64 // deadline set on Conn (unix ns); 0 none, -1 unknown

	// While discarding is set (mochi resends a resumed session, see
	// delivery.go), PUBLISH packets with DUP set are cut out of writes;
	// dropped and droppedBytes count them.
	discarding            atomic.Bool
	dropped, droppedBytes atomic.Int64
}

const (
	maxHeldAcks   = 4 << 10
	maxHold       = time.Millisecond
	deadlineSlack = 250 * time.Millisecond
)

func newBatchConn(c net.Conn) *batchConn { return &batchConn{Conn: c} }

// Read writes the held acknowledgements, then reads.
func (c *batchConn) Read(p []byte) (int, error) {
	c.release()
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		c.active = true
		c.mu.Unlock()
	}
	return n, err
}

// release marks the reading goroutine as no longer active and writes the
// held acknowledgements, unless another goroutine is writing: that one
// writes them before it returns.
func (c *batchConn) release() {
	c.mu.Lock()
	c.active = false
	c.mu.Unlock()
	c.drain()
}

// drain writes held bytes while nobody else is writing and the reading
// goroutine is not active. Every holder of wmu calls it after unlocking, so
// bytes held when the reading goroutine stops being active are always
// written by someone.
func (c *batchConn) drain() {
	for {
		c.mu.Lock()
		due := len(c.held) > 0 && !c.active && c.err == nil
		c.mu.Unlock()
		if !due || !c.wmu.TryLock() {
			return
		}
		c.writeHeld(nil)
		c.wmu.Unlock()
	}
}

// writeHeld writes the held bytes followed by p; wmu must be held.
func (c *batchConn) writeHeld(p []byte) (int, error) {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	out := c.held
	c.held, c.spare = c.spare[:0], nil
	c.mu.Unlock()
	var err error
	switch {
	case len(out) == 0 && len(p) == 0:
	case len(out) == 0:
		_, err = c.Conn.Write(p)
	case len(p) == 0:
		_, err = c.Conn.Write(out)
	default:
		out = append(out, p...)
		_, err = c.Conn.Write(out)
	}
	c.mu.Lock()
	if cap(out) <= maxHeldAcks*2 {
		c.spare = out[:0]
	}
	if err != nil && c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// isAck reports whether p is exactly one PUBACK, PUBREC, PUBREL or PUBCOMP.
func isAck(p []byte) bool {
	return len(p) >= 4 && p[0]>>4 >= 4 && p[0]>>4 <= 7 && p[1] < 0x80 && len(p) == 2+int(p[1])
}

// discardResent starts (on) or ends dropping resent PUBLISH packets (see
// batchConn.discarding); ending it returns how many packets and bytes were
// dropped.
func (c *batchConn) discardResent(on bool) (packets, bytes int64) {
	c.discarding.Store(on)
	if on {
		return 0, 0
	}
	return c.dropped.Swap(0), c.droppedBytes.Swap(0)
}

// withoutResent returns p without the PUBLISH packets with DUP set that it
// holds. mochi writes whole packets, one or several at a time.
func (c *batchConn) withoutResent(p []byte) []byte {
	var kept []byte
	start := 0 // of the bytes not yet copied to kept
	for i := 0; i < len(p); {
		n, size := 0, 0
		for j := 1; j <= 4 && i+j < len(p); j++ {
			n |= int(p[i+j]&0x7f) << (7 * (j - 1))
			if p[i+j]&0x80 == 0 {
				size = 1 + j + n
				break
			}
		}
		if size == 0 || i+size > len(p) {
			break // not a whole packet: leave the rest as it is
		}
		if p[i]>>4 == 3 && p[i]&0x08 != 0 {
			if kept == nil {
				kept = make([]byte, 0, len(p)-size)
			}
			kept = append(kept, p[start:i]...)
			start = i + size
			c.dropped.Add(1)
			c.droppedBytes.Add(int64(size))
		}
		i += size
	}
	if kept == nil {
		return p
	}
	return append(kept, p[start:]...)
}

func (c *batchConn) Write(p []byte) (int, error) {
	if c.discarding.Load() {
		kept := c.withoutResent(p)
		if len(kept) == len(p) {
			return c.write(p)
		}
		if len(kept) > 0 {
			if _, err := c.write(kept); err != nil {
				return 0, err
			}
		}
		return len(p), nil
	}
	return c.write(p)
}

func (c *batchConn) write(p []byte) (int, error) {
	if isAck(p) {
		c.mu.Lock()
		if c.err != nil {
			err := c.err
			c.mu.Unlock()
			return 0, err
		}
		if c.active && len(c.held)+len(p) <= maxHeldAcks {
			if len(c.held) == 0 {
				if c.late == nil {
					c.late = time.AfterFunc(maxHold, c.writeLate)
				} else {
					c.late.Reset(maxHold)
				}
			}
			c.held = append(c.held, p...)
			c.mu.Unlock()
			return len(p), nil
		}
		c.mu.Unlock()
	}
	c.wmu.Lock()
	n, err := c.writeHeld(p)
	c.wmu.Unlock()
	c.drain()
	return n, err
}

// writeLate writes the held bytes whatever the reading goroutine does.
func (c *batchConn) writeLate() {
	c.wmu.Lock()
	_, _ = c.writeHeld(nil)
	c.wmu.Unlock()
	c.drain()
}

// Close writes the held acknowledgements (waiting at most 100ms for the
// network) unless another goroutine is writing, then closes.
func (c *batchConn) Close() error {
	c.mu.Lock()
	c.active = false
	due := len(c.held) > 0 && c.err == nil
	if c.late != nil {
		c.late.Stop()
	}
	c.mu.Unlock()
	if due && c.wmu.TryLock() {
		c.armed.Store(-1)
		_ = c.Conn.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		_, _ = c.writeHeld(nil)
		c.wmu.Unlock()
	}
	return c.Conn.Close()
}

// SetDeadline sets t, or a deadline up to deadlineSlack later (see
// batchConn).
func (c *batchConn) SetDeadline(t time.Time) error {
	armed := c.armed.Load()
	if t.IsZero() {
		if armed == 0 {
			return nil
		}
		c.armed.Store(0)
		return c.Conn.SetDeadline(t)
	}
	n := t.UnixNano()
	switch {
	case armed > 0 && n <= armed && n > armed-int64(deadlineSlack):
		return nil // armed already, at most deadlineSlack late
	case armed > 0 && n <= armed:
		c.armed.Store(n) // moved earlier: exactly
		return c.Conn.SetDeadline(t)
	}
	n += int64(deadlineSlack)
	c.armed.Store(n)
	return c.Conn.SetDeadline(time.Unix(0, n))
}

func (c *batchConn) SetReadDeadline(t time.Time) error {
	c.armed.Store(-1)
	return c.Conn.SetReadDeadline(t)
}

func (c *batchConn) SetWriteDeadline(t time.Time) error {
	c.armed.Store(-1)
	return c.Conn.SetWriteDeadline(t)
}
