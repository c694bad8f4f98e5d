package bridge

import (
	"bufio"
	"net"
	"sync"
	"time"
)

// writeBuffer coalesces the MQTT clients' writes (paho.golang makes two or
// more per packet, paho.mqtt.golang one; one syscall each) into few large
// writes: Write appends to a buffer and one goroutine, owned by the
// writeBuffer, writes it to the connection. The embedded Mutex is the lock
// paho.golang holds around each whole packet (packets.ControlPacket.WriteTo),
// which keeps packets contiguous; paho.mqtt.golang writes each packet with
// one Write.
//
// Reads are buffered too: both clients read a packet with several small
// reads (type byte, length bytes one by one, body), a syscall each without
// the buffer. Read must be called from one goroutine at a time (each client
// has a single reader).
//
// A write error closes the connection (the reader then sees the loss) and
// is returned by later Writes. Close flushes what is buffered, bounded by
// flushTimeout, then closes the connection; closing the underlying
// connection directly (abort) makes everything fail at once.
type writeBuffer struct {
	net.Conn
	sync.Mutex // packet lock, see above
	r          *bufio.Reader

	mu      sync.Mutex
	cond    *sync.Cond
	buf     []byte
	spare   []byte
	err     error
	closing bool
	wg      sync.WaitGroup
}

const (
	maxBuffered  = 256 << 10 // Write waits while this much is pending
	readBuffer   = 32 << 10
	flushTimeout = 2 * time.Second
)

func newWriteBuffer(c net.Conn) *writeBuffer {
	w := &writeBuffer{Conn: c, r: bufio.NewReaderSize(c, readBuffer)}
	w.cond = sync.NewCond(&w.mu)
	w.wg.Go(w.run)
	return w
}

func (w *writeBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(w.buf) >= maxBuffered && w.err == nil && !w.closing {
		w.cond.Wait()
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.closing {
		return 0, net.ErrClosed
	}
	w.buf = append(w.buf, p...)
	w.cond.Broadcast()
	return len(p), nil
}

// Read reads from the connection through the read buffer.
func (w *writeBuffer) Read(p []byte) (int, error) { return w.r.Read(p) }

func (w *writeBuffer) run() {
	for {
		w.mu.Lock()
		for len(w.buf) == 0 && !w.closing && w.err == nil {
			w.cond.Wait()
		}
		if w.err != nil || len(w.buf) == 0 {
			w.mu.Unlock()
			return
		}
		out := w.buf
		w.buf = w.spare[:0]
		w.cond.Broadcast()
		w.mu.Unlock()

		_, err := w.Conn.Write(out)

		w.mu.Lock()
		w.spare = out[:0]
		if err != nil {
			w.err = err
			w.cond.Broadcast()
			w.mu.Unlock()
			_ = w.Conn.Close()
			return
		}
		w.mu.Unlock()
	}
}

// Close flushes the buffer (at most flushTimeout) and closes the
// connection. Idempotent.
func (w *writeBuffer) Close() error {
	w.mu.Lock()
	if !w.closing {
		w.closing = true
		_ = w.Conn.SetWriteDeadline(time.Now().Add(flushTimeout))
	}
	w.cond.Broadcast()
	w.mu.Unlock()
	w.wg.Wait()
	return w.Conn.Close()
}
