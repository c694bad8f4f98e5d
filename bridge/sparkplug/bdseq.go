package sparkplug

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// BdSeqStore keeps the birth/death sequence number in a small file, so
// that every MQTT connection, also after a restart or a crash, announces a
// bdSeq one above the previous connection's (0–255, wrapping): a host then
// tells the NDEATH of an old session from the current one.
//
// The file holds the bdSeq of the latest connection in decimal. Next
// writes the new value durably (temporary file, fsync, rename, fsync of the
// directory) before returning it, so a value is never reused for a new
// connection, whatever happens to the process afterwards.
//
// A BdSeqStore is safe for concurrent use. It holds no open files.
type BdSeqStore struct {
	path string

	mu   sync.Mutex
	last int // -1: no previous connection
}

// OpenBdSeqStore reads the bdSeq file at path. A missing file means no
// previous connection (the first bdSeq is 0). A file whose content is not a
// number in 0–255 is logged once and treated as missing: the node's next
// bdSeq restarts at 0, which a host accepts as a new session.
func OpenBdSeqStore(path string, log *slog.Logger) (*BdSeqStore, error) {
	s := &BdSeqStore{path: path, last: -1}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("read bdSeq: %w", err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || v < 0 || v > 255 {
		log.Warn("bdSeq file unreadable, restarting the sequence at 0", "path", path, "content", truncate(string(b), 32))
		return s, nil
	}
	s.last = v
	return s, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// Next advances the bdSeq for a new connection, persists it and returns it.
// On error the stored value is unchanged and the same value is attempted
// next time.
func (s *BdSeqStore) Next() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := (s.last + 1) % 256
	if err := writeFileSync(s.path, []byte(strconv.Itoa(next)+"\n")); err != nil {
		return 0, fmt.Errorf("persist bdSeq: %w", err)
	}
	s.last = next
	return uint64(next), nil
}

// writeFileSync replaces path with data atomically and durably.
func writeFileSync(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
