package modbus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	mb "github.com/goburrow/modbus"
)

// dialTimeout bounds a TCP connect.
const dialTimeout = 5 * time.Second

// tcpTransport is Modbus TCP (MBAP framing) on one connection per endpoint.
// Transaction ids are checked: a late answer to an earlier, timed-out request
// is skipped.
type tcpTransport struct {
	address string
	c       *counters
	conn    net.Conn
	pk      *mb.TCPClientHandler // used only as a packager: Encode (transaction ids), Verify, Decode
	buf     [260]byte
}

func newTCPTransport(address string, c *counters) *tcpTransport {
	return &tcpTransport{address: address, c: c, pk: mb.NewTCPClientHandler(address)}
}

func (t *tcpTransport) isOpen() bool { return t.conn != nil }

func (t *tcpTransport) open() error {
	conn, err := net.DialTimeout("tcp", t.address, dialTimeout)
	if err != nil {
		return fmt.Errorf("connect %s: %w", t.address, err)
	}
	t.conn = conn
	return nil
}

func (t *tcpTransport) close() error {
	if t.conn == nil {
		return nil
	}
	err := t.conn.Close()
	t.conn = nil
	return err
}

func (t *tcpTransport) transact(ctx context.Context, unit byte, req *mb.ProtocolDataUnit, timeout time.Duration) (*mb.ProtocolDataUnit, time.Time, error) {
	t.pk.SlaveId = unit
	adu, err := t.pk.Encode(req)
	if err != nil {
		return nil, time.Time{}, &frameError{err.Error()}
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	// Unblock I/O when ctx is cancelled.
	conn := t.conn
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if err := t.conn.SetDeadline(deadline); err != nil {
		return nil, time.Time{}, fmt.Errorf("set deadline on %s: %w", t.address, err)
	}
	if _, err := t.conn.Write(adu); err != nil {
		return nil, time.Time{}, t.ioError(ctx, "write", err)
	}
	for {
		if n, err := io.ReadFull(t.conn, t.buf[:7]); err != nil {
			return nil, time.Time{}, t.readError(ctx, n > 0, err)
		}
		length := int(binary.BigEndian.Uint16(t.buf[4:]))
		if length < 2 || length > len(t.buf)-6 {
			t.close() // the stream is out of step: reconnect
			return nil, time.Time{}, &frameError{fmt.Sprintf("MBAP length %d", length)}
		}
		if _, err := io.ReadFull(t.conn, t.buf[7:6+length]); err != nil {
			return nil, time.Time{}, t.readError(ctx, true, err)
		}
		arrived := time.Now()
		resp := t.buf[:6+length]
		if binary.BigEndian.Uint16(resp) != binary.BigEndian.Uint16(adu) {
			continue // a late answer to an earlier request
		}
		if err := t.pk.Verify(adu, resp); err != nil {
			return nil, time.Time{}, &frameError{err.Error()}
		}
		pdu, err := t.pk.Decode(resp)
		if err != nil {
			return nil, time.Time{}, &frameError{err.Error()}
		}
		pdu.Data = append([]byte(nil), pdu.Data...)
		return pdu, arrived, nil
	}
}

// readError classifies a read error; a read that stopped inside a frame
// leaves the stream out of step, so the connection is closed.
func (t *tcpTransport) readError(ctx context.Context, partial bool, err error) error {
	err = t.ioError(ctx, "read", err)
	if partial && (errors.Is(err, ErrTimeout) || ctx.Err() != nil) {
		t.close()
		if ctx.Err() != nil {
			return err
		}
		return &frameError{"response cut short: " + err.Error()}
	}
	return err
}

// ioError classifies a connection error: a timeout keeps the connection
// (the transaction id check drops the late answer), anything else is an
// I/O error that makes the bus close and reconnect.
func (t *tcpTransport) ioError(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%s %s: %w", op, t.address, ErrTimeout)
	}
	return fmt.Errorf("%s %s: %w", op, t.address, err)
}
