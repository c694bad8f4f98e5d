package buffer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Run does the queue's background work until ctx is done, then returns nil
// (ErrClosed if the queue is already closed), or the error wrapping
// ErrStoreFailed as soon as the store fails:
//   - about every second, persists acknowledgements not yet persisted and
//     reports quota drops;
//   - every MaxAge/100 (clamped to 1s..1m), drops records older than MaxAge
//     (reason "expired", one log line per sweep with the count);
//   - every 5 minutes, returns disk space: when the queue is empty, it drops
//     all record keys at once (badger DropPrefix); otherwise it runs value-log
//     GC;
//   - every 25ms (Linux), when the file pages in the process's RSS grew
//     by 4 MiB since the last time, unmaps the pages of badger's mmap'd
//     files (MADV_DONTNEED; they stay in the page cache), which keeps them
//     out of the process's RSS.
//
// Run starts no goroutine; it runs in the caller's. Call it at most once.
func (q *Queue) Run(ctx context.Context) error {
	q.mu.Lock()
	closed := q.closed
	q.mu.Unlock()
	if closed {
		return ErrClosed
	}
	expiryEvery := min(max(q.cfg.MaxAge/100, time.Second), time.Minute)
	tick := time.NewTicker(maintenanceInterval)
	defer tick.Stop()
	trim := time.NewTicker(trimInterval)
	defer trim.Stop()
	var lastExpiry, lastGC time.Time
	var trimmed int64 // file pages in the RSS after the last trim
	lastGC = time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-q.failed:
			return q.storeFailure()
		case <-trim.C:
			// Paging out costs syscalls, and page faults when the pages
			// are read again: only once the file pages in the RSS grew
			// by trimGrowth since the last trim.
			if n, ok := fileRSS(); !ok || n > trimmed+trimGrowth {
				trimMappings(q.dir)
				trimmed, _ = fileRSS()
			}
		case now := <-tick.C:
			q.maintain()
			if q.cfg.MaxAge > 0 && now.Sub(lastExpiry) >= expiryEvery {
				lastExpiry = now
				if _, err := q.expire(); err != nil && !errors.Is(err, ErrClosed) {
					q.log.Warn("buffer: expiry sweep failed", "err", err)
				}
			}
			if now.Sub(lastGC) >= gcInterval {
				lastGC = now
				if err := q.collect(); err != nil && !errors.Is(err, ErrClosed) {
					q.log.Warn("buffer: reclaiming disk space failed", "err", err)
				}
			}
		}
	}
}

// maintain persists pending acks and reports drops.
func (q *Queue) maintain() {
	q.wmu.Lock()
	defer q.wmu.Unlock()
	if q.db == nil {
		return
	}
	if err := q.flushAcksLocked(); err != nil {
		q.log.Warn("buffer: persisting acknowledgements failed; will retry", "err", err)
	}
	q.logDrops(q.now(), false)
	q.logFill()
}

// Fill levels at which the buffer logs a state change: above nearFull it
// logs "near full" once, and "below" again once it drained under
// nearFullClear (hysteresis, so a level hovering at the edge logs nothing
// more).
const (
	nearFull      = 0.9
	nearFullClear = 0.8
)

// logFill logs when the backlog crosses the near-full levels.
func (q *Queue) logFill() {
	q.mu.Lock()
	used := float64(q.st.bytes) / float64(q.cfg.MaxBytes)
	was := q.nearFull
	switch {
	case !was && used >= nearFull:
		q.nearFull = true
	case was && used < nearFullClear:
		q.nearFull = false
	}
	now := q.nearFull
	q.mu.Unlock()
	switch {
	case now && !was:
		q.log.Warn("buffer: near full", "used_percent", int(used*100), "max_bytes", q.cfg.MaxBytes.String(), "when_full", string(q.cfg.WhenFull))
	case was && !now:
		q.log.Info("buffer: no longer near full", "used_percent", int(used*100))
	}
}

// expire drops the records older than MaxAge, from the head on, and returns
// how many it dropped.
func (q *Queue) expire() (int, error) {
	if q.cfg.MaxAge <= 0 {
		return 0, nil
	}
	q.wmu.Lock()
	defer q.wmu.Unlock()
	if q.db == nil {
		return 0, ErrClosed
	}
	cutoff := q.now().Add(-q.cfg.MaxAge)
	w := q.newWriter()
	expired, corrupt := 0, 0
	err := q.removeFront(w, true, func(_ uint64, _ int, v []byte) dropReason {
		t, ok := recordTime(v)
		if !ok {
			corrupt++
			return reasonCorrupt
		}
		if t.Before(cutoff) {
			expired++
			return reasonExpired
		}
		return keep
	})
	if err == nil {
		err = w.flush()
	}
	if err != nil {
		return 0, fmt.Errorf("buffer: expire: %w", err)
	}
	if expired > 0 {
		q.log.Warn("buffer: dropped expired records", "dropped", expired, "max_age", q.cfg.MaxAge.String())
	}
	if corrupt > 0 {
		q.log.Error("buffer: dropped corrupt records", "dropped", corrupt)
	}
	return expired, nil
}

// collect returns disk space to the file system.
func (q *Queue) collect() error {
	q.wmu.Lock()
	defer q.wmu.Unlock()
	if q.db == nil {
		return ErrClosed
	}
	if err := q.flushAcksLocked(); err != nil {
		return err
	}
	q.mu.Lock()
	empty, removed := q.st.count == 0, q.reclaim
	q.mu.Unlock()
	if empty && removed > 0 {
		// Nothing is stored: drop every record key and tombstone at once
		// (writes are excluded by wmu). Badger ignores a prefix without a
		// live key, so a sentinel is written first; it goes too.
		err := q.db.Update(func(txn *badger.Txn) error { return txn.Set(sentinelKey, nil) })
		if err == nil {
			err = q.db.DropPrefix([]byte{recordPrefix})
		}
		if err != nil {
			return fmt.Errorf("drop prefix: %w", err)
		}
		q.mu.Lock()
		q.reclaim = 0
		q.mu.Unlock()
	}
	for range 4 {
		err := q.db.RunValueLogGC(0.5)
		if errors.Is(err, badger.ErrNoRewrite) || errors.Is(err, badger.ErrRejected) {
			break
		}
		if err != nil {
			return fmt.Errorf("value log gc: %w", err)
		}
	}
	return nil
}

// Stats returns a snapshot of the queue's counters and sizes.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	s := q.stats
	st := q.st
	q.mu.Unlock()
	out := Stats{
		Messages:         st.count,
		Bytes:            st.bytes,
		MaxBytes:         uint64(q.cfg.MaxBytes),
		LastSeq:          st.lastSeq,
		Head:             st.head,
		Appended:         s.appended,
		Acked:            s.acked,
		Rejected:         s.rejected,
		Dropped:          Dropped{Quota: s.dropQuota, Expired: s.dropExpired, Corrupt: s.dropCorrupt},
		Syncs:            s.syncs,
		BatchesCommitted: s.batches,
		DiskBytes:        dirSize(q.dir),
		Quarantined:      s.quarantined,
		Rebuilt:          s.rebuilt,
	}
	if st.count > 0 {
		out.OldestTime = q.oldestTime(st.head)
	}
	return out
}

func (q *Queue) oldestTime(head uint64) time.Time {
	q.life.RLock()
	defer q.life.RUnlock()
	if q.db == nil {
		return time.Time{}
	}
	var t time.Time
	_ = q.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{recordPrefix}, PrefetchValues: false})
		defer it.Close()
		it.Seek(seekKey(head + 1))
		if it.Valid() {
			return it.Item().Value(func(v []byte) error {
				if rt, ok := recordTime(v); ok {
					t = rt.UTC()
				}
				return nil
			})
		}
		return nil
	})
	return t
}

// dirSize sums the disk usage of the regular files in dir.
func dirSize(dir string) int64 {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var n int64
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if fi, err := os.Stat(filepath.Join(dir, e.Name())); err == nil {
			n += diskUsage(fi)
		}
	}
	return n
}

// Close persists pending acknowledgements and closes the store. Appends
// already accepted are committed first; afterwards every method returns
// ErrClosed (Stats keeps working). Close is idempotent.
func (q *Queue) Close() error {
	q.gmu.Lock()
	q.closing = true
	for q.leading || q.syncing {
		q.gcond.Wait()
	}
	q.gmu.Unlock()

	q.mu.Lock()
	already := q.closed
	q.closed = true
	q.mu.Unlock()
	if already {
		return nil
	}
	q.wmu.Lock()
	defer q.wmu.Unlock()
	ferr := q.flushAcksLocked()
	q.logDrops(q.now(), true)
	q.syncer.close()
	q.life.Lock()
	cerr := q.db.Close()
	q.db = nil
	q.life.Unlock()
	if err := errors.Join(ferr, cerr); err != nil {
		return fmt.Errorf("buffer: close: %w", err)
	}
	return nil
}
