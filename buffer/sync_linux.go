package buffer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// storeSyncer makes everything written to badger so far durable, in place
// of badger's DB.Sync. DB.Sync syncs only the active memtable's write-ahead
// log and the newest value-log file. A batch written just before a memtable
// rotation is in an older WAL, which nothing syncs until badger has flushed
// that memtable to a table (it then deletes the WAL); a value-log rotation
// leaves the previous file unsynced in the same way. So storeSyncer lists
// the store's directory and fdatasyncs every WAL (*.mem: one, two while a
// flush runs) and, when values went to the value log since the last sync
// (or a new value-log file appeared), the value-log files from the newest
// one seen at the previous sync on. It does that through descriptors of its
// own: the pages are shared with badger's mappings, and on Linux
// msync(MS_SYNC) is an fdatasync of the mapped range. It is also cheaper
// than DB.Sync, which syncs the value log every time. Used by one goroutine
// at a time (the group commit's syncer, then Close).
type storeSyncer struct {
	dir     string
	files   map[string]*os.File
	vlogMax int // newest value-log file seen at the previous sync (-1: none yet)
	seen    map[string]bool
	// For tests: the most WALs and value-log files synced by one call.
	maxWALs, maxVlogs int
}

func newStoreSyncer(dir string) *storeSyncer {
	return &storeSyncer{dir: dir, files: make(map[string]*os.File), vlogMax: -1, seen: make(map[string]bool)}
}

// sync makes every write that completed before the call durable. values
// says whether values may have gone to the value log since the previous
// call. It returns false when the directory does not look like a badger
// store (no WAL found): the caller then falls back to DB.Sync.
func (s *storeSyncer) sync(values bool) (bool, error) {
	d, err := os.Open(s.dir)
	if err != nil {
		return false, fmt.Errorf("sync: %w", err)
	}
	names, err := d.Readdirnames(-1)
	_ = d.Close()
	if err != nil {
		return false, fmt.Errorf("sync: list %s: %w", s.dir, err)
	}
	var wals []string
	vlogs := map[int]string{}
	vmax := -1
	for _, n := range names {
		switch {
		case strings.HasSuffix(n, ".mem"):
			wals = append(wals, n)
		case strings.HasSuffix(n, ".vlog"):
			if fid, err := strconv.Atoi(strings.TrimSuffix(n, ".vlog")); err == nil {
				vlogs[fid] = n
				vmax = max(vmax, fid)
			}
		}
	}
	if len(wals) == 0 {
		return false, nil
	}
	clear(s.seen)
	s.maxWALs = max(s.maxWALs, len(wals))
	for _, n := range wals {
		s.seen[n] = true
		if err := s.fdatasync(n); err != nil {
			return true, err
		}
	}
	if values || vmax != s.vlogMax {
		from := s.vlogMax
		if from < 0 {
			from = vmax // older files were complete before Open
		}
		synced := 0
		for fid := from; fid <= vmax; fid++ {
			n, ok := vlogs[fid]
			if !ok {
				continue
			}
			s.seen[n] = true
			if err := s.fdatasync(n); err != nil {
				return true, err
			}
			synced++
		}
		s.maxVlogs = max(s.maxVlogs, synced)
		s.vlogMax = vmax
	} else if n, ok := vlogs[vmax]; ok {
		s.seen[n] = true // keep its descriptor
	}
	for n, f := range s.files {
		if !s.seen[n] {
			_ = f.Close()
			delete(s.files, n)
		}
	}
	return true, nil
}

// fdatasync syncs the named file of the store. A file gone meanwhile was a
// WAL badger deleted after flushing its memtable to a synced table.
func (s *storeSyncer) fdatasync(name string) error {
	f := s.files[name]
	if f == nil {
		var err error
		f, err = os.Open(filepath.Join(s.dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("sync: %w", err)
		}
		s.files[name] = f
	}
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("sync %s: %w", name, err)
		}
		return nil
	}
}

// close releases the descriptors.
func (s *storeSyncer) close() {
	for n, f := range s.files {
		_ = f.Close()
		delete(s.files, n)
	}
}
