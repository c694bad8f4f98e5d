package modbus

import (
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	mb "github.com/goburrow/modbus"
	"golang.org/x/sys/unix"
)

// fault is a scripted misbehaviour of the test slave, applied to one
// request.
type fault struct {
	kind string // exception | silence | garbage | crc | split | late
	code byte   // exception code
	gap  time.Duration
}

// bank is the register bank of one unit.
type bank struct {
	holding, input    [2048]uint16
	coils, discretes  [2048]bool
	exceptionAt       map[int]byte // holding/input address → exception for any read covering it
	requests, writes  int
	lastFunction      byte
	lastWriteFunction byte
}

// slave is an in-process Modbus slave: FC 1-6, 15, 16 from register banks,
// unknown units get silence, faults are scripted per request.
type slave struct {
	mu     sync.Mutex
	units  map[byte]*bank
	faults []fault
	wg     sync.WaitGroup
}

func newSlave(t testing.TB, units ...byte) *slave {
	s := &slave{units: map[byte]*bank{}}
	for _, u := range units {
		s.units[u] = &bank{exceptionAt: map[int]byte{}}
	}
	t.Cleanup(s.wg.Wait)
	return s
}

func (s *slave) bank(unit byte) *bank {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.units[unit]
}

// with runs fn on the banks under the slave's lock.
func (s *slave) with(fn func(units map[byte]*bank)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(s.units)
}

func (s *slave) setHolding(unit byte, addr int, v uint16) {
	s.with(func(u map[byte]*bank) { u[unit].holding[addr] = v })
}

func (s *slave) requests(unit byte) (n int) {
	s.with(func(u map[byte]*bank) { n = u[unit].requests })
	return n
}

func (s *slave) lastWrite(unit byte) (fc byte) {
	s.with(func(u map[byte]*bank) { fc = u[unit].lastWriteFunction })
	return fc
}

func (s *slave) script(f ...fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, f...)
}

// handle answers one request PDU: the response PDU, or nil for silence,
// and the fault to apply to the bytes.
func (s *slave) handle(unit byte, req *mb.ProtocolDataUnit) (*mb.ProtocolDataUnit, fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.units[unit]
	if b == nil {
		return nil, fault{}
	}
	var f fault
	if len(s.faults) > 0 {
		f, s.faults = s.faults[0], s.faults[1:]
	}
	b.requests++
	b.lastFunction = req.FunctionCode
	exc := func(code byte) *mb.ProtocolDataUnit {
		return &mb.ProtocolDataUnit{FunctionCode: req.FunctionCode | 0x80, Data: []byte{code}}
	}
	switch f.kind {
	case "silence":
		return nil, f
	case "exception":
		return exc(f.code), f
	}
	d := req.Data
	if len(d) < 4 {
		return exc(3), f
	}
	addr := int(binary.BigEndian.Uint16(d))
	qty := int(binary.BigEndian.Uint16(d[2:]))
	switch req.FunctionCode {
	case 1, 2:
		if addr+qty > len(b.coils) {
			return exc(2), f
		}
		src := b.coils[:]
		if req.FunctionCode == 2 {
			src = b.discretes[:]
		}
		out := make([]byte, 1+(qty+7)/8)
		out[0] = byte(len(out) - 1)
		for i := 0; i < qty; i++ {
			if src[addr+i] {
				out[1+i/8] |= 1 << uint(i%8)
			}
		}
		return &mb.ProtocolDataUnit{FunctionCode: req.FunctionCode, Data: out}, f
	case 3, 4:
		if addr+qty > len(b.holding) || qty > 125 {
			return exc(2), f
		}
		for a, code := range b.exceptionAt {
			if a >= addr && a < addr+qty {
				return exc(code), f
			}
		}
		src := b.holding[:]
		if req.FunctionCode == 4 {
			src = b.input[:]
		}
		out := make([]byte, 1+2*qty)
		out[0] = byte(2 * qty)
		for i := 0; i < qty; i++ {
			binary.BigEndian.PutUint16(out[1+2*i:], src[addr+i])
		}
		return &mb.ProtocolDataUnit{FunctionCode: req.FunctionCode, Data: out}, f
	case 5:
		if addr >= len(b.coils) {
			return exc(2), f
		}
		b.coils[addr] = qty == 0xFF00
	case 6:
		if addr >= len(b.holding) {
			return exc(2), f
		}
		b.holding[addr] = uint16(qty)
	case 15:
		if len(d) < 5 || addr+qty > len(b.coils) {
			return exc(2), f
		}
		for i := 0; i < qty; i++ {
			b.coils[addr+i] = d[5+i/8]>>uint(i%8)&1 == 1
		}
	case 16:
		if len(d) < 5+2*qty || addr+qty > len(b.holding) {
			return exc(2), f
		}
		for i := 0; i < qty; i++ {
			b.holding[addr+i] = binary.BigEndian.Uint16(d[5+2*i:])
		}
	default:
		return exc(1), f
	}
	b.writes++
	b.lastWriteFunction = req.FunctionCode
	return &mb.ProtocolDataUnit{FunctionCode: req.FunctionCode, Data: append([]byte(nil), d[:4]...)}, f
}

// rtuRequestLength is the length of the request frame starting with b, or
// 0 while unknown.
func rtuRequestLength(b []byte) int {
	if len(b) < 2 {
		return 0
	}
	switch b[1] {
	case 15, 16:
		if len(b) < 7 {
			return 0
		}
		return 7 + int(b[6]) + 2
	}
	return 8
}

// ptyPort is a pty pair: the driver opens Link (a symlink to the pty's
// device node, standing in for /dev/serial/by-id/...), the slave serves
// the master side.
type ptyPort struct {
	Link   string
	master *os.File
	tty    *os.File
}

func newPty(t testing.TB, link string) *ptyPort {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatalf("open pty: %v", err)
	}
	// A non-blocking duplicate of the master goes into Go's poller, so that
	// Close interrupts the slave's pending Read (unplug, cleanup).
	fd, err := unix.Dup(int(ptmx.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	ptmx.Close()
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	unix.CloseOnExec(fd)
	master := os.NewFile(uintptr(fd), "/dev/ptmx")
	tio, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	// cfmakeraw
	tio.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	tio.Oflag &^= unix.OPOST
	tio.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	tio.Cflag &^= unix.CSIZE | unix.PARENB
	tio.Cflag |= unix.CS8
	if err := unix.IoctlSetTermios(int(tty.Fd()), unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	if link == "" {
		link = filepath.Join(t.TempDir(), "ttyV1")
	}
	os.Remove(link)
	if err := os.Symlink(tty.Name(), link); err != nil {
		t.Fatal(err)
	}
	p := &ptyPort{Link: link, master: master, tty: tty}
	t.Cleanup(func() { p.unplug() })
	return p
}

// unplug closes both ends and removes the link: the driver's reads fail
// with EIO and the port cannot be resolved.
func (p *ptyPort) unplug() {
	p.master.Close()
	p.tty.Close()
	os.Remove(p.Link)
}

// serveRTU answers RTU requests on p until the master is closed.
func (s *slave) serveRTU(p *ptyPort) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		pk := mb.NewRTUClientHandler("")
		var buf []byte
		chunk := make([]byte, 512)
		for {
			n, err := p.master.Read(chunk)
			if err != nil {
				return
			}
			buf = append(buf, chunk[:n]...)
			for {
				want := rtuRequestLength(buf)
				if want == 0 || len(buf) < want {
					break
				}
				frame := buf[:want]
				buf = buf[want:]
				req, err := pk.Decode(frame)
				if err != nil { // bad CRC: drop everything, as after a line error
					buf = nil
					break
				}
				resp, f := s.handle(frame[0], req)
				if resp == nil {
					continue
				}
				pk.SlaveId = frame[0]
				adu, _ := pk.Encode(resp)
				if !writeRTU(p.master, adu, f) {
					return
				}
			}
		}
	}()
}

func writeRTU(w io.Writer, adu []byte, f fault) bool {
	var err error
	switch f.kind {
	case "garbage":
		_, err = w.Write(append([]byte{0x00, 0xFF, 0x13, 0x37}, adu...))
	case "crc":
		bad := append([]byte(nil), adu...)
		bad[len(bad)-1] ^= 0xFF
		_, err = w.Write(bad)
	case "split":
		for i := 0; i < len(adu) && err == nil; i += 3 {
			_, err = w.Write(adu[i:min(i+3, len(adu))])
			time.Sleep(f.gap)
		}
	case "late":
		time.Sleep(f.gap)
		_, err = w.Write(adu)
	default:
		_, err = w.Write(adu)
	}
	return err == nil
}

// tcpSlave serves s over Modbus TCP on 127.0.0.1:0.
type tcpSlave struct {
	s     *slave
	ln    net.Listener
	mu    sync.Mutex
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func (s *slave) serveTCP(t testing.TB) *tcpSlave {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &tcpSlave{s: s, ln: ln, conns: map[net.Conn]bool{}}
	t.Cleanup(func() {
		ln.Close()
		ts.dropAll()
		ts.wg.Wait()
	})
	ts.wg.Add(1)
	go func() {
		defer ts.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ts.mu.Lock()
			ts.conns[c] = true
			ts.mu.Unlock()
			ts.wg.Add(1)
			go func() {
				defer ts.wg.Done()
				ts.serveConn(c)
			}()
		}
	}()
	return ts
}

func (ts *tcpSlave) addr() string { return ts.ln.Addr().String() }

// dropAll closes every accepted connection (a server restart, a NAT timeout).
func (ts *tcpSlave) dropAll() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for c := range ts.conns {
		c.Close()
		delete(ts.conns, c)
	}
}

func (ts *tcpSlave) serveConn(c net.Conn) {
	defer c.Close()
	hdr := make([]byte, 7)
	for {
		if _, err := io.ReadFull(c, hdr); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(hdr[4:]))
		body := make([]byte, n-1)
		if _, err := io.ReadFull(c, body); err != nil {
			return
		}
		req := &mb.ProtocolDataUnit{FunctionCode: body[0], Data: body[1:]}
		resp, f := ts.s.handle(hdr[6], req)
		if resp == nil {
			continue
		}
		out := make([]byte, 8+len(resp.Data))
		copy(out, hdr[:4])
		binary.BigEndian.PutUint16(out[4:], uint16(2+len(resp.Data)))
		out[6] = hdr[6]
		out[7] = resp.FunctionCode
		copy(out[8:], resp.Data)
		if f.kind == "late" {
			time.Sleep(f.gap)
		}
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}
