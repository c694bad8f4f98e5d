package buffer

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/fieldgate/fieldgate/internal/durable"
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
	dir   string
	files map[string]*os.File
	seen  map[string]bool
	// The WAL and value-log files as of the last listing, which is redone
	// when inotify reports one created or deleted (every time without
	// inotify): listing costs ~50 µs in a store with many tables.
	listed bool
	wals   []string
	vlogs  map[int]string
	vmax   int
	ino    int // inotify descriptor watching dir, -1: none
	evbuf  []byte
	// vlogMax is the newest value-log file seen at the previous sync (-1:
	// none yet).
	vlogMax int
	// dirDirty says that an entry of dir was created, removed or renamed
	// since the directory was last synced (always, without inotify).
	dirDirty bool
	// For tests: the most WALs and value-log files synced by one call, and
	// the number of listings.
	maxWALs, maxVlogs, listings int
}

func newStoreSyncer(dir string) *storeSyncer {
	s := &storeSyncer{dir: dir, files: make(map[string]*os.File), seen: make(map[string]bool), vlogs: make(map[int]string), vlogMax: -1, ino: -1, dirDirty: true}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return s
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_DELETE|unix.IN_MOVED_FROM|unix.IN_MOVED_TO); err != nil {
		_ = unix.Close(fd)
		return s
	}
	s.ino, s.evbuf = fd, make([]byte, 16<<10)
	return s
}

// changed reads the pending inotify events and says whether a WAL or a
// value-log file was created or deleted since the previous call (always
// true without inotify, or when events were lost).
func (s *storeSyncer) changed() bool {
	if s.ino < 0 {
		return true
	}
	changed := false
	for {
		n, err := unix.Read(s.ino, s.evbuf)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			return changed
		}
		if err != nil || n <= 0 {
			// Unusable: list every time from now on.
			_ = unix.Close(s.ino)
			s.ino = -1
			s.dirDirty = true
			return true
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&s.evbuf[off]))
			name := s.evbuf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 || bytes.HasSuffix(name, []byte(".mem")) || bytes.HasSuffix(name, []byte(".vlog")) {
				changed = true
			}
			s.dirDirty = true
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
	}
}

// list reads the directory.
func (s *storeSyncer) list() error {
	d, err := os.Open(s.dir)
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	names, err := d.Readdirnames(-1)
	_ = d.Close()
	if err != nil {
		return fmt.Errorf("sync: list %s: %w", s.dir, err)
	}
	s.listings++
	s.wals = s.wals[:0]
	clear(s.vlogs)
	s.vmax = -1
	for _, n := range names {
		switch {
		case strings.HasSuffix(n, ".mem"):
			s.wals = append(s.wals, n)
		case strings.HasSuffix(n, ".vlog"):
			if fid, err := strconv.Atoi(strings.TrimSuffix(n, ".vlog")); err == nil {
				s.vlogs[fid] = n
				s.vmax = max(s.vmax, fid)
			}
		}
	}
	s.listed = true
	return nil
}

// sync makes every write that completed before the call durable. values
// says whether values may have gone to the value log since the previous
// call. It returns false when the directory does not look like a badger
// store (no WAL found): the caller then falls back to DB.Sync.
func (s *storeSyncer) sync(values bool) (bool, error) {
	// Events first: a file created after them is listed now or reported
	// next time.
	if s.changed() || !s.listed {
		if err := s.list(); err != nil {
			s.listed = false
			return false, err
		}
	}
	if len(s.wals) == 0 {
		s.listed = false
		return false, nil
	}
	clear(s.seen)
	// The value log first, then the WALs that point into it: the next
	// batch is being written meanwhile (vlog, then WAL), and a WAL synced
	// first could make a pointer durable whose value is not. In this
	// order every WAL record synced here points at a value that was
	// written before the WAL record, so before this sync began, or at one
	// of the next batch, which no Append returned for (Open drops such an
	// unreadable tail, see dropUnreadableTail).
	vmax := s.vmax
	if values || vmax != s.vlogMax {
		from := s.vlogMax
		if from < 0 {
			from = vmax // older files were complete before Open
		}
		synced := 0
		for fid := from; fid <= vmax; fid++ {
			n, ok := s.vlogs[fid]
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
	} else if n, ok := s.vlogs[vmax]; ok {
		s.seen[n] = true // keep its descriptor
	}
	s.maxWALs = max(s.maxWALs, len(s.wals))
	for _, n := range s.wals {
		s.seen[n] = true
		if err := s.fdatasync(n); err != nil {
			return true, err
		}
	}
	// Then the directory, after the data its new entries refer to: badger
	// creates tables, WALs and value-log files and removes them (a flushed
	// memtable's WAL, a value log after GC) without syncing it.
	if s.dirDirty {
		s.dirDirty = s.ino < 0
		if err := durable.SyncDir(s.dir); err != nil {
			s.dirDirty = true
			return true, fmt.Errorf("sync: %w", err)
		}
	}
	if len(s.files) > len(s.seen) {
		for n, f := range s.files {
			if !s.seen[n] {
				_ = f.Close()
				delete(s.files, n)
			}
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
	if s.ino >= 0 {
		_ = unix.Close(s.ino)
		s.ino = -1
	}
	for n, f := range s.files {
		_ = f.Close()
		delete(s.files, n)
	}
}
