package bridge

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/eclipse/paho.golang/packets"

	"github.com/fieldgate/fieldgate/internal/durable"
)

// sessionStore is the client side of the persisted MQTT 5 session (the
// storer paho's session state uses). QoS 2 PUBLISH packets and the PUBREL
// packets that replace them are written to one file per packet
// identifier, together with the buffer sequence number of the record they
// carry, durably (write, fsync, rename) before the packet is sent. QoS 1
// packets are kept in memory only: the upstream keeps no state for them,
// and the buffer resends them after a restart.
//
// File format: "FGS1", put order (uint64 BE), buffer seq (uint64 BE), the
// MQTT packet. A file that does not parse is renamed *.corrupt.
//
// With dir == "" every packet is kept in memory (a session that lasts as
// long as the process).
type sessionStore struct {
	dir string // "": nothing is written

	mu      sync.Mutex
	order   uint64
	entries map[uint16]storeEntry
	nextSeq uint64 // seq of the record being added (set by session5 under addMu)
}

type storeEntry struct {
	order, seq uint64
	durable    bool
	// pkt is the packet of an in-memory (QoS 1) entry, encoded only if Get
	// asks for it (a resumed session): the packet is never changed once
	// put, and encoding every one would cost as much as sending it.
	pkt io.WriterTo
}

const (
	storeMagic  = "FGS1"
	storeHeader = 4 + 8 + 8
	retryMarker = "clean-start-next"
)

func openSessionStore(dir string) (*sessionStore, error) {
	if err := durable.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("session store: %w", err)
	}
	s := &sessionStore{dir: dir, entries: make(map[uint16]storeEntry)}
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("session store: %w", err)
	}
	for _, de := range des {
		name := de.Name()
		if strings.HasSuffix(name, ".tmp") {
			_ = os.Remove(filepath.Join(dir, name))
			continue
		}
		idStr, ok := strings.CutSuffix(name, ".pkt")
		if !ok {
			continue
		}
		id, err := strconv.ParseUint(idStr, 10, 16)
		if err != nil || id == 0 {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || len(data) < storeHeader || string(data[:4]) != storeMagic {
			_ = os.Rename(filepath.Join(dir, name), filepath.Join(dir, name+".corrupt"))
			continue
		}
		e := storeEntry{order: binary.BigEndian.Uint64(data[4:]), seq: binary.BigEndian.Uint64(data[12:]), durable: true}
		s.entries[uint16(id)] = e
		s.order = max(s.order, e.order)
	}
	return s, nil
}

func (s *sessionStore) path(id uint16) string {
	return filepath.Join(s.dir, strconv.FormatUint(uint64(id), 10)+".pkt")
}

// Put stores a PUBLISH or PUBREL (the PUBREL keeps the PUBLISH's seq and
// place in the order).
func (s *sessionStore) Put(id uint16, typ byte, w io.WriterTo) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var e storeEntry
	exists := false
	if typ != packets.PUBLISH { // a PUBLISH replaces whatever was there
		e, exists = s.entries[id]
	}
	switch {
	case typ == packets.PUBLISH || !exists:
		s.order++
		e = storeEntry{order: s.order, seq: s.nextSeq}
		if p, ok := w.(*packets.Publish); ok && p.QoS == 2 {
			e.durable = true
		}
		if typ == packets.PUBREL {
			e.durable = true
		}
	case typ == packets.PUBREL:
		e.durable = true
	}
	if s.dir == "" {
		e.durable = false
	}
	if !e.durable {
		e.pkt = w
		s.entries[id] = e
		return nil
	}
	e.pkt = nil
	data, err := encodeEntry(e, w)
	if err != nil {
		return fmt.Errorf("session store: encode packet %d: %w", id, err)
	}
	if err := writeFileSync(s.path(id), data); err != nil {
		return fmt.Errorf("session store: %w", err)
	}
	s.entries[id] = e
	return nil
}

// encodeEntry returns the file contents of e holding packet w.
func encodeEntry(e storeEntry, w io.WriterTo) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(storeHeader + 64)
	buf.WriteString(storeMagic)
	var hdr [16]byte
	binary.BigEndian.PutUint64(hdr[:8], e.order)
	binary.BigEndian.PutUint64(hdr[8:], e.seq)
	buf.Write(hdr[:])
	if _, err := w.WriteTo(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeFileSync(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	// The directory too: else after a power cut the old file (or none)
	// can come back in place of the new one.
	return durable.Rename(tmp, path)
}

func (s *sessionStore) Get(id uint16) (io.ReadCloser, error) {
	s.mu.Lock()
	e, ok := s.entries[id]
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("session store: packet %d not found", id)
	}
	var data []byte
	var err error
	if e.durable {
		data, err = os.ReadFile(s.path(id))
	} else {
		data, err = encodeEntry(e, e.pkt)
	}
	if err != nil {
		return nil, fmt.Errorf("session store: packet %d: %w", id, err)
	}
	if len(data) < storeHeader || string(data[:4]) != storeMagic {
		return nil, fmt.Errorf("session store: packet %d: bad header", id)
	}
	return io.NopCloser(bytes.NewReader(data[storeHeader:])), nil
}

func (s *sessionStore) Delete(id uint16) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[id]
	if !ok {
		return nil
	}
	delete(s.entries, id)
	if e.durable {
		if err := os.Remove(s.path(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("session store: %w", err)
		}
	}
	return nil
}

func (s *sessionStore) Quarantine(id uint16) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[id]
	delete(s.entries, id)
	if ok && e.durable {
		return os.Rename(s.path(id), s.path(id)+".corrupt")
	}
	return nil
}

// List returns the packet identifiers in the order they were first put.
func (s *sessionStore) List() ([]uint16, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]uint16, 0, len(s.entries))
	for id := range s.entries {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b uint16) int { return cmpU64(s.entries[a].order, s.entries[b].order) })
	return ids, nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Reset clears the store (a clean session); it also removes the marker
// that forces one.
func (s *sessionStore) Reset() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for id, e := range s.entries {
		if e.durable {
			if err := os.Remove(s.path(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	clear(s.entries)
	if s.dir == "" {
		return errors.Join(errs...)
	}
	if err := os.Remove(filepath.Join(s.dir, retryMarker)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// setNext records the seq of the record whose PUBLISH is put next.
func (s *sessionStore) setNext(seq uint64) {
	s.mu.Lock()
	s.nextSeq = seq
	s.mu.Unlock()
}

// restored returns the durable entries (packet id, seq) in put order.
func (s *sessionStore) restored() (ids []uint16, seqs []uint64) {
	list, _ := s.List()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range list {
		if e := s.entries[id]; e.durable && e.seq != 0 {
			ids = append(ids, id)
			seqs = append(seqs, e.seq)
		}
	}
	return ids, seqs
}

// markRetry persists that the next connection must start a clean session
// (a message was refused for retry and is no longer in the session).
func (s *sessionStore) markRetry() error {
	return writeFileSync(filepath.Join(s.dir, retryMarker), nil)
}

func (s *sessionStore) retryMarked() bool {
	_, err := os.Stat(filepath.Join(s.dir, retryMarker))
	return err == nil
}
