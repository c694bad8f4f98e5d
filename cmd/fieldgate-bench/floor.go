package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The durable floor: the least that any durable ingest has to do on this
// machine, as a reference row beside the gateway's ingest. It is the bench
// binary itself, started as "fieldgate-bench serve-floor ADDR DIR". It
// speaks just enough MQTT 3.1.1 for the bench's publishers (CONNECT,
// PUBLISH at QoS 0/1, PINGREQ, DISCONNECT) and for each QoS 1 publish it
// appends the packet's body with a length and a CRC to one log file, makes
// the log durable with one fdatasync per batch (a group commit: what
// arrives while an fdatasync runs goes into the next), and only then writes
// the PUBACKs, in the order the publishes arrived. The log is written full
// of zeros when the floor starts (an fdatasync of blocks already allocated
// is the cheapest one ext4 has: about 0.2 ms here against 0.3–0.5 ms for a
// file that grows or is sparse) and is reused from the start when full.
//
// There is no broker (no topics, sessions or deliveries), no index, no
// quota and no recovery: its rate is an upper bound for the gateway's
// durable ingest on the same machine with the same load, not something the
// gateway could reach.

const (
	floorLogSize  = 64 << 20 // pre-written log, reused from the start when full
	floorStatFile = "floor-stats.json"
)

// floorStats is what the floor reports when it stops (SIGTERM).
type floorStats struct {
	Fsyncs   int64   `json:"fsyncs"`
	Messages int64   `json:"messages"` // QoS 1 publishes made durable and acknowledged
	FsyncSec float64 `json:"fsync_seconds"`
}

// floorConn is one client connection. Its PUBACKs are written by the
// syncer; CONNACK and PINGRESP by its reader: wmu orders the two.
type floorConn struct {
	c   net.Conn
	wmu sync.Mutex
}

func (c *floorConn) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.c.Write(b)
	return err
}

type floorAck struct {
	c  *floorConn
	id uint16
}

// floor is the server's state: the batch being filled (records and the
// acknowledgements that wait for them) and the log.
type floor struct {
	mu    sync.Mutex
	ready *sync.Cond
	recs  []byte
	acks  []floorAck
	err   error // the log failed: stop acknowledging

	log   *os.File
	off   int64
	stats floorStats
}

// serveFloor runs the floor on addr with its log in dir until ctx ends or
// SIGTERM, then writes its statistics to dir/floor-stats.json.
func serveFloor(ctx context.Context, addr, dir string) error {
	if err := checkLoopback(addr); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dir, "floor.log"), os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("floor: %w", err)
	}
	defer f.Close()
	zeros := make([]byte, 1<<20)
	for n := 0; n < floorLogSize; n += len(zeros) {
		if _, err := f.Write(zeros); err != nil {
			return fmt.Errorf("floor: write the log: %w", err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("floor: sync the log: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("floor: %w", err)
	}
	s := &floor{log: f}
	s.ready = sync.NewCond(&s.mu)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		ln.Close()
		s.mu.Lock()
		if s.err == nil {
			s.err = errors.New("stopping")
		}
		s.ready.Broadcast()
		s.mu.Unlock()
	}()
	synced := make(chan struct{})
	go func() { defer close(synced); s.syncLoop() }()
	for {
		c, err := ln.Accept()
		if err != nil {
			break
		}
		go s.serve(&floorConn{c: c})
	}
	<-synced
	s.mu.Lock()
	st := s.stats
	s.mu.Unlock()
	raw, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, floorStatFile), raw, 0o600)
}

// serve reads one connection's packets until it closes.
func (s *floor) serve(c *floorConn) {
	defer c.c.Close()
	br := bufio.NewReaderSize(c.c, 64<<10)
	for {
		h, body, err := readPacket(br)
		if err != nil {
			return
		}
		switch h >> 4 {
		case pktConnect:
			if c.write([]byte{pktConnack << 4, 2, 0, 0}) != nil {
				return
			}
		case pktPublish:
			if !s.publish(c, h, body) {
				return
			}
		case 12: // PINGREQ
			if c.write([]byte{13 << 4, 0}) != nil {
				return
			}
		default: // DISCONNECT, or something the floor does not do
			return
		}
	}
}

// publish queues one PUBLISH body for the log (QoS 1: with its PUBACK).
func (s *floor) publish(c *floorConn, h byte, body []byte) bool {
	qos := (h >> 1) & 3
	if qos > 1 || len(body) < 2 {
		return false
	}
	var id uint16
	if qos == 1 {
		n := 2 + int(binary.BigEndian.Uint16(body))
		if len(body) < n+2 {
			return false
		}
		id = binary.BigEndian.Uint16(body[n:])
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return false
	}
	s.recs = binary.BigEndian.AppendUint32(s.recs, uint32(len(body)))
	s.recs = binary.BigEndian.AppendUint32(s.recs, crc32.ChecksumIEEE(body))
	s.recs = append(s.recs, body...)
	if qos == 1 {
		s.acks = append(s.acks, floorAck{c, id})
		if len(s.acks) == 1 {
			s.ready.Signal()
		}
	}
	return true
}

// syncLoop is the group commit: it takes the batch, writes it, fdatasyncs
// and acknowledges, until the log fails or the floor stops.
func (s *floor) syncLoop() {
	var recs []byte
	var acks []floorAck
	var out []byte
	for {
		s.mu.Lock()
		for len(s.acks) == 0 && s.err == nil {
			s.ready.Wait()
		}
		if s.err != nil {
			s.mu.Unlock()
			return
		}
		recs, s.recs = s.recs, recs[:0]
		acks, s.acks = s.acks, acks[:0]
		s.mu.Unlock()

		t0 := time.Now()
		err := s.append(recs)
		if err == nil {
			err = unix.Fdatasync(int(s.log.Fd()))
		}
		d := time.Since(t0)
		s.mu.Lock()
		s.stats.Fsyncs++
		s.stats.Messages += int64(len(acks))
		s.stats.FsyncSec += d.Seconds()
		if err != nil && s.err == nil {
			s.err = fmt.Errorf("floor log: %w", err)
		}
		s.mu.Unlock()
		if err != nil {
			return // nothing of this batch is acknowledged
		}
		// One write per run of acknowledgements to the same connection.
		for i, a := range acks {
			out = append(out, pktPuback<<4, 2, byte(a.id>>8), byte(a.id))
			if i+1 == len(acks) || acks[i+1].c != a.c {
				_ = a.c.write(out) // a broken connection shows in its reader
				out = out[:0]
			}
		}
	}
}

// append writes recs at the log's offset, going back to the start of the
// pre-written file when it would run past its end.
func (s *floor) append(recs []byte) error {
	if len(recs) > floorLogSize {
		return fmt.Errorf("a batch of %d bytes is larger than the log", len(recs))
	}
	if s.off+int64(len(recs)) > floorLogSize {
		s.off = 0
	}
	if _, err := s.log.WriteAt(recs, s.off); err != nil {
		return err
	}
	s.off += int64(len(recs))
	return nil
}

// startFloor starts the floor (this binary, serve-floor) on host with a
// fresh port and its log in dir, and waits until it accepts connections.
func startFloor(dir, host string) (*broker, error) {
	addr, err := newTargetDir(host, dir, "floor")
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}
	p, err := startProc("floor", self, "serve-floor", addr, dir)
	if err != nil {
		return nil, err
	}
	b := &broker{kind: "floor", addr: addr, p: p, dir: dir, bin: self}
	// It writes its 64 MiB log before it listens.
	if err := b.awaitListener(30 * time.Second); err != nil {
		return nil, err
	}
	return b, nil
}

// floorResult reads the statistics a stopped floor left in its dir.
func floorResult(b *broker) (floorStats, error) {
	var st floorStats
	raw, err := os.ReadFile(filepath.Join(b.dir, floorStatFile))
	if err != nil {
		return st, fmt.Errorf("floor statistics: %w%s", err, b.diagnose())
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return st, fmt.Errorf("floor statistics: %w", err)
	}
	return st, nil
}

// ingestFloor runs the ingest load on the floor and adds what the floor
// measured inside: its fdatasync time and the messages each one carried.
// Every acknowledgement the bench counted must be one the floor sent after
// an fdatasync.
func ingestFloor(ctx context.Context, o *options, dir string) result {
	const scenario = "ingest-floor"
	b, err := startFloor(dir, o.host)
	if err != nil {
		return result{Scenario: scenario, Target: "floor", Error: err.Error()}
	}
	spec := loadSpec{pubs: o.ingestPubs, window: ingestInflight / o.ingestPubs, qos: 1, messages: o.ingestMsgs, payload: o.payload, topic: "ingest"}
	r := ingest(ctx, b, spec, scenario)
	b.stop()
	st, err := floorResult(b)
	switch {
	case err != nil:
		if r.Error == "" {
			r.Error = err.Error()
		}
	case st.Fsyncs > 0:
		r.Extra["batch_sync_ms"] = 1e3 * st.FsyncSec / float64(st.Fsyncs)
		r.Extra["msgs_per_fsync"] = float64(st.Messages) / float64(st.Fsyncs)
	}
	if err == nil && r.Error == "" && st.Messages != r.Acked {
		r.Error = fmt.Sprintf("the floor acknowledged %d publishes after an fdatasync, the bench counted %d", st.Messages, r.Acked)
	}
	return r
}
