package buffer

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/fieldgate/fieldgate/internal/durable"
)

// Badger tuning for a Raspberry Pi-class machine (the defaults use
// 300-650 MB of RAM): small memtables, no block cache (nothing is
// compressed or encrypted, so blocks are read straight from the mmap'd
// tables), values up to valueThreshold kept in the LSM tree so that
// dropping them needs no value-log GC, small value-log files so that GC can
// return space.
//
// baseTableSize (badger's default is 2 MiB) sizes the buffers badger's
// table builders start with, twice the table size, which grow by doubling
// and are then kept in a pool on the Go heap; an 8 MiB memtable flushed
// into 2 MiB-sized builders made them grow. Heap profiles of a 500k-message
// durable ingest: with 2 MiB tables the pool held 48 MB of a 63 MB live
// heap, close to the process's memory limit, and the garbage collector ran
// nearly all the time (its mark workers 26 % of the CPU); with 4 MiB
// tables, 25 MB of 40 MB, and 1 %. The 1M-message fill went from 24–30k to
// 37–40k msgs/s (fieldgate-bench, drain scenario). Every level's tables have
// that size (badger multiplies it by 2 per level by default): with 1M
// records of 200 bytes the deeper levels' builders grew the peak RSS to
// 176 MB (BenchmarkRSS1M, fill); with one size, 104 MB, and the fill took 29
// s instead of 66–69 s.
const (
	memTableSize   = 8 << 20
	baseTableSize  = 4 << 20
	valueThreshold = 4 << 10
	vlogFileSize   = 16 << 20
)

func badgerOptions(dir string, log *slog.Logger) badger.Options {
	o := badger.DefaultOptions(dir).
		WithLogger(badgerLogger{log}).
		WithSyncWrites(false). // Append syncs once per group commit
		WithMemTableSize(memTableSize).
		WithBaseTableSize(baseTableSize).
		WithNumMemtables(2).
		WithNumLevelZeroTables(4).
		WithNumLevelZeroTablesStall(8).
		WithBlockCacheSize(0).
		WithIndexCacheSize(0).
		WithCompression(options.None).
		WithNumCompactors(2).
		WithNumGoroutines(2).
		WithValueThreshold(valueThreshold).
		WithValueLogFileSize(vlogFileSize).
		WithMetricsEnabled(false).
		WithDetectConflicts(false).
		WithChecksumVerificationMode(options.OnBlockRead)
	o.TableSizeMultiplier = 1 // every level's tables baseTableSize (no With method)
	return o
}

// badgerLogger routes badger's logging to slog: errors and warnings only.
type badgerLogger struct{ log *slog.Logger }

func (l badgerLogger) Errorf(f string, a ...any) {
	l.log.Error("badger: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}

func (l badgerLogger) Warningf(f string, a ...any) {
	l.log.Warn("badger: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (badgerLogger) Infof(string, ...any)  {}
func (badgerLogger) Debugf(string, ...any) {}

// Open opens the queue stored in dir, creating it if needed. It reads only a
// small metadata record, never the whole store. A store badger cannot open
// (corrupt or truncated files) is renamed to dir+".corrupt-<UTC time>",
// reported in one log line and in Stats.Quarantined, and an empty store is
// created in its place. Errors of the environment (permissions, a store
// locked by another process, a read-only or full disk) are returned instead.
//
// cfg must be valid (see Config.Validate); Open does not apply defaults.
// log may be nil to discard logging. Open starts no goroutine besides
// badger's own; the caller must Close the Queue.
func Open(dir string, cfg Config, log *slog.Logger) (*Queue, error) {
	if err := platformError(); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("buffer: invalid config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "buffer")
	if err := durable.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("buffer: open: %w", err)
	}
	q := &Queue{
		dir:      dir,
		cfg:      cfg,
		log:      log,
		now:      time.Now,
		notify:   make(chan struct{}, 1),
		acked:    make(map[uint64]struct{}),
		ackLimit: ackMemLimit,
		failed:   make(chan struct{}),
	}
	q.syncFault = injectedSyncFault()
	q.gcond = sync.NewCond(&q.gmu)

	db, m, rebuilt, dropped, err := openStore(dir, log)
	if err != nil {
		if environmentError(err) {
			return nil, fmt.Errorf("buffer: open %s: %w", dir, err)
		}
		moved := fmt.Sprintf("%s.corrupt-%s", filepath.Clean(dir), time.Now().UTC().Format("20060102T150405Z"))
		if rerr := os.Rename(dir, moved); rerr != nil {
			return nil, fmt.Errorf("buffer: open %s: %w (moving the store aside failed: %v)", dir, err, rerr)
		}
		// Durably: else a power cut could bring the corrupt store back in
		// place of the fresh one, with what was appended to that lost.
		if serr := durable.SyncDir(filepath.Dir(filepath.Clean(dir))); serr != nil {
			return nil, fmt.Errorf("buffer: open %s: %w (moving the store aside: %v)", dir, err, serr)
		}
		log.Error("buffer: store is corrupt; moved it aside and started an empty buffer", "dir", dir, "moved_to", moved, "reason", err)
		q.stats.quarantined = 1
		if err := durable.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("buffer: open fresh store: %w", err)
		}
		db, m, rebuilt, dropped, err = openStore(dir, log)
		if err != nil {
			return nil, fmt.Errorf("buffer: open fresh store %s: %w", dir, err)
		}
	}
	if dropped > 0 {
		q.stats.dropCorrupt += uint64(dropped)
		log.Error("buffer: dropped unreadable records at the end of the store (their values never reached the disk: written after the last sync before a power cut, or the value log is damaged)", "dir", dir, "dropped", dropped)
	}
	if rebuilt {
		q.stats.rebuilt = 1
		log.Warn("buffer: metadata was missing or inconsistent; rebuilt it by scanning the store", "dir", dir, "records", m.count, "last_seq", m.lastSeq)
	}
	// What badger created or removed while opening (a new store's files,
	// a replayed memtable flushed to a table) becomes durable now, not at
	// the first append.
	if err := durable.SyncDir(dir); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("buffer: open %s: %w", dir, err)
	}
	q.db, q.st = db, m
	q.syncer = newStoreSyncer(dir)
	o := db.Opts()
	q.tuning = newTuning(o.MemTableSize, o.ValueThreshold)
	if id, err := statDir(dir); err == nil {
		q.dirID = id
	}
	return q, nil
}

// environmentError tells problems of the machine (which moving the store
// aside would not fix) from a corrupt store. Badger flattens its errors to
// strings, so this matches their text.
func environmentError(err error) bool {
	if errors.Is(err, fs.ErrPermission) {
		return true
	}
	s := strings.ToLower(err.Error())
	for _, m := range []string{"cannot acquire directory lock", "permission denied", "read-only file system", "no space left on device", "too many open files", "cannot allocate memory"} {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}

// openStore opens badger and loads (or, if it is missing or does not match
// the keys, rebuilds) the metadata. A panic inside badger while reading a
// damaged store is turned into an error.
func openStore(dir string, log *slog.Logger) (db *badger.DB, m meta, rebuilt bool, dropped int, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("badger panicked reading the store: %v", p)
			if db != nil {
				_ = db.Close()
				db = nil
			}
		}
	}()
	opts := badgerOptions(dir, log)
	if err := removeEmptyLogs(dir); err != nil {
		return nil, meta{}, false, 0, err
	}
	if err := checkManifest(dir, opts); err != nil {
		return nil, meta{}, false, 0, err
	}
	if err := checkTables(dir); err != nil {
		return nil, meta{}, false, 0, err
	}
	db, err = badger.Open(opts)
	if err != nil {
		return nil, meta{}, false, 0, err
	}
	dropped, err = dropUnreadableTail(db)
	if err == nil {
		m, rebuilt, err = loadMeta(db, dropped)
	}
	if err != nil {
		_ = db.Close()
		return nil, meta{}, false, 0, err
	}
	return db, m, rebuilt, dropped, nil
}

// loadMeta reads the metadata and checks it against the first and last
// record keys (two seeks). When it is missing or does not match, it scans
// the record keys once and writes corrected metadata.
func loadMeta(db *badger.DB, dropped int) (meta, bool, error) {
	var m meta
	var merr error
	var first, last uint64
	var found bool
	err := db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(metaKey)
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
			merr = errors.New("no metadata")
		case err != nil:
			return fmt.Errorf("read metadata: %w", err)
		default:
			v, err := item.ValueCopy(nil)
			if err != nil {
				return fmt.Errorf("read metadata: %w", err)
			}
			m, merr = decodeMeta(v)
		}
		first, last, found, err = keyRange(txn)
		return err
	})
	if err != nil {
		return meta{}, false, err
	}
	switch {
	case merr == nil && !found && m.count > 0:
		// The metadata is written in the same transaction as the keys:
		// records it counts cannot vanish unless the tables are damaged.
		return meta{}, false, fmt.Errorf("%d records expected after seq %d, none readable: %w", m.count, m.head, errCorrupt)
	case merr == nil && dropped == 0 && (!found || m.count > 0 && first > m.head && last <= m.lastSeq):
		if found {
			if err := checkRecords(db, first, last); err != nil {
				return meta{}, false, err
			}
		}
		return m, false, nil
	case merr != nil && !errors.Is(merr, errCorrupt) && !found && dropped == 0:
		return meta{}, false, nil // a new store
	}
	// Rebuild. Keep lastSeq when it was readable, so that sequence numbers
	// are not reused.
	r := meta{}
	if merr == nil {
		r.lastSeq = m.lastSeq
	}
	var lastKey uint64
	err = db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{recordPrefix}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if bytes.Equal(it.Item().Key(), sentinelKey) {
				continue
			}
			seq, n, err := parseRecordKey(it.Item().Key())
			if err != nil {
				return err
			}
			if r.count == 0 {
				r.head = seq - 1
			}
			r.count++
			r.bytes += recordCost(n)
			r.lastSeq = max64(r.lastSeq, seq)
			lastKey = seq
		}
		if r.count == 0 {
			r.head = r.lastSeq
		}
		return nil
	})
	if err != nil {
		return meta{}, false, fmt.Errorf("rebuild metadata: %w", err)
	}
	if r.count > 0 {
		if err := checkRecords(db, r.head+1, lastKey); err != nil {
			return meta{}, false, err
		}
	}
	err = db.Update(func(txn *badger.Txn) error { return txn.Set(metaKey, encodeMeta(r)) })
	if err == nil {
		err = db.Sync()
	}
	if err != nil {
		return meta{}, false, fmt.Errorf("write rebuilt metadata: %w", err)
	}
	return r, true, nil
}

// keyRange returns the first and last record sequence numbers.
func keyRange(txn *badger.Txn) (first, last uint64, found bool, err error) {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{recordPrefix}})
	it.Rewind()
	if it.Valid() && !bytes.Equal(it.Item().Key(), sentinelKey) {
		first, _, err = parseRecordKey(it.Item().Key())
		found = true
	}
	it.Close()
	if !found || err != nil {
		return first, last, found, err
	}
	rit := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{recordPrefix}, Reverse: true})
	defer rit.Close()
	rit.Seek(sentinelKey)
	if rit.Valid() && bytes.Equal(rit.Item().Key(), sentinelKey) {
		rit.Next() // left by a crash inside collect
	}
	if rit.Valid() {
		last, _, err = parseRecordKey(rit.Item().Key())
	}
	return first, last, found, err
}

// checkRecords reads and verifies the first and the last record: a cheap
// probe that catches truncated or damaged value logs and tables at both
// ends of the queue. Damage in between is found by Read, which drops the
// affected records as "corrupt".
func checkRecords(db *badger.DB, seqs ...uint64) error {
	return db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{recordPrefix}})
		defer it.Close()
		for _, seq := range seqs {
			it.Seek(seekKey(seq))
			if !it.Valid() {
				return fmt.Errorf("record %d unreadable: %w", seq, errCorrupt)
			}
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return fmt.Errorf("record %d: %v: %w", seq, err, errCorrupt)
			}
			if _, err := decodeRecord(it.Item().Key(), v); err != nil {
				return err
			}
		}
		return nil
	})
}

// dropUnreadableTail deletes the records near the end of the queue whose
// value is in the value log but cannot be read, and returns how many it
// deleted. After a power cut, write-ahead log records can be durable while
// the value-log entries they point to are not: both were written after the
// last group commit's sync of the value log began, so Append never returned
// for them (see storeSyncer.sync). Such records can be interleaved with
// readable ones whose values are kept in the LSM tree. The value log is
// written sequentially and synced as a prefix, so the scan (backwards,
// keys only) stops at the first record whose value-log entry is readable,
// or after tailScanRecords records: Open must stay cheap. Damage further
// back is found by Read, which drops those records as "corrupt".
func dropUnreadableTail(db *badger.DB) (int, error) {
	var bad [][]byte
	err := db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{recordPrefix}, Reverse: true})
		defer it.Close()
		n := 0
		for it.Seek(sentinelKey); it.Valid() && n < tailScanRecords; it.Next() {
			item := it.Item()
			if bytes.Equal(item.Key(), sentinelKey) {
				continue
			}
			n++
			if item.ValueSize() < valueThreshold {
				continue // in the LSM tree, durable with its key
			}
			if readable(item) {
				return nil
			}
			bad = append(bad, item.KeyCopy(nil))
		}
		return nil
	})
	if err != nil || len(bad) == 0 {
		return 0, err
	}
	err = db.Update(func(txn *badger.Txn) error {
		for _, k := range bad {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = db.Sync()
	}
	if err != nil {
		return 0, fmt.Errorf("drop %d unreadable records at the end: %w", len(bad), err)
	}
	return len(bad), nil
}

// tailScanRecords bounds dropUnreadableTail's scan: more than the records
// written while one sync runs.
const tailScanRecords = 4 * maxBatchRequests

// readable says whether a record's value can be read and decoded.
func readable(item *badger.Item) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	v, err := item.ValueCopy(nil)
	if err != nil {
		return false
	}
	_, err = decodeRecord(item.Key(), v)
	return err == nil
}

// removeEmptyLogs removes the empty WAL and value-log files in dir. Badger
// creates a log and sizes it before anything is written to it; a power cut
// can keep the file's directory entry (synced with another change of the
// directory) but not its size, and badger refuses to open an empty log
// ("Create a new file"). An empty log holds no record, and no durable
// pointer can refer to an empty value log: the value log is synced before
// the WALs that point into it.
func removeEmptyLogs(dir string) error {
	var removed bool
	for _, pat := range []string{"*.mem", "*.vlog"} {
		logs, err := filepath.Glob(filepath.Join(dir, pat))
		if err != nil {
			return err
		}
		for _, p := range logs {
			fi, err := os.Stat(p)
			if err != nil || fi.Size() != 0 {
				continue
			}
			if err := os.Remove(p); err != nil {
				return err
			}
			removed = true
		}
	}
	if removed {
		return durable.SyncDir(dir)
	}
	return nil
}
