package buffer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

var (
	// ErrFull is returned by Append under the Reject policy when the record
	// does not fit in the quota. Nothing was stored.
	ErrFull = errors.New("buffer: full")
	// ErrTooLarge is returned by Append for a record that alone exceeds the
	// quota (its payload plus RecordOverhead is more than MaxBytes).
	ErrTooLarge = errors.New("buffer: record larger than the quota")
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("buffer: closed")
	// ErrDiskFull is returned by Append when the file system holding the
	// store has less than DiskReserve free: nothing was stored. badger
	// writes through memory-mapped files, and a write into a sparse page
	// of a full file system kills the process with SIGBUS, so appends stop
	// while there is still room for badger's own files.
	ErrDiskFull = errors.New("buffer: disk full")
	// ErrStoreFailed is wrapped by the error of every Append once the
	// device reported an I/O error (EIO) while records were being made
	// durable: which writes reached the disk is then unknown (the page
	// cache may have dropped them), so the queue accepts nothing more and
	// Run returns the failure. Reopening the store, after a restart,
	// recovers what was durable. A full disk or a read-only file system is
	// not such a failure.
	ErrStoreFailed = errors.New("buffer: store failed")
)

// DiskReserve is the free space below which Append refuses records with
// ErrDiskFull: room for a value-log file (badger maps twice its size), the
// memtables and a level-0 flush.
const DiskReserve = 2*vlogFileSize + 4*memTableSize

// Record is one entry of the queue. Read returns copies: the caller owns
// Data.
type Record struct {
	Seq  uint64    // assigned by Append, > 0, monotonic, never reused
	Time time.Time // append time (UTC)
	Data []byte
}

// Tuning of the group commit: a leader takes at most this many requests or
// bytes into one commit (it is then split into badger transactions of at
// most maxTxnBytes, all made durable by one fsync).
const (
	maxBatchRequests = 4096
	maxBatchBytes    = 8 << 20
	// lingerYields bounds how often a leader yields the processor waiting
	// for more appenders to join its batch.
	lingerYields = 4
	// ackMemLimit bounds the acknowledgements of records behind an
	// unacknowledged one kept in memory; beyond it they are deleted one by
	// one.
	ackMemLimit = 16384
	// maintenanceInterval is how often Run persists acks and reports drops.
	maintenanceInterval = time.Second
	// trimInterval is how often Run checks whether to unmap the pages of
	// badger's mmap'd files (see trimMappings); a check reads
	// /proc/self/statm. With 4 MiB tables, checking every 100 ms let the
	// RSS peak at 106–111 MB while 1M messages were stored, every 25 ms at
	// 92 MB (fieldgate-bench, drain scenario).
	trimInterval = 25 * time.Millisecond
	// trimGrowth is how much the file pages in the RSS (badger's mappings,
	// but also the executable's) may grow before Run trims the mappings.
	trimGrowth = 4 << 20
	// gcInterval is how often Run reclaims disk space.
	gcInterval = 5 * time.Minute
	// dropLogInterval rate-limits the "quota reached" log line.
	dropLogInterval = time.Minute
)

// Queue is a durable FIFO of records. Create it with Open; every method is
// safe for concurrent use.
type Queue struct {
	dir    string
	cfg    Config
	log    *slog.Logger
	now    func() time.Time // injectable clock (tests)
	notify chan struct{}

	// Group commit: the first appender becomes the leader and commits the
	// requests pending at that moment, including those that arrive while it
	// waits for the fsync of the previous batch.
	gmu       sync.Mutex
	gcond     *sync.Cond // signalled when leading becomes false
	pending   []*appendReq
	leading   bool
	lastBatch int // size of the previous batch
	closing   bool
	// Written, not yet durable: syncLoop runs while syncing is set.
	written   []*appendReq
	unsynced  bool // written holds records (not only refusals)
	syncing   bool
	syncer    *storeSyncer
	bigValues atomic.Bool // values went to the value log since the last sync
	// syncFault, when set, is called before each sync and its error
	// returned in place of the sync's (fault injection, see faults_*.go).
	syncFault func(dir string) error

	// wmu serialises every write to badger and the fsync following an
	// append commit, so that the persisted metadata always matches the keys.
	wmu    sync.Mutex
	db     *badger.DB // nil after Close; read under life
	life   sync.RWMutex
	tuning tuning
	// ackLimit is ackMemLimit (lowered by tests).
	ackLimit  int
	reclaim   uint64    // records removed since the last DropPrefix (under wmu)
	freeCheck freeCheck // the last statfs of the store (under wmu)

	mu       sync.Mutex
	nearFull bool                // logged "near full", not yet drained below the clear level (under mu)
	diskFull bool                // appends refused for lack of disk space (under mu)
	st       meta                // persisted state, changed under wmu and mu
	acked    map[uint64]struct{} // acked but not yet deleted (seq > st.head)
	closed   bool
	stats    counters
	// failure is the store failure (wrapping ErrStoreFailed), nil while
	// the store works (under mu); failed is closed when it is set.
	failure error
	failed  chan struct{}

	// ackedTo: every record with seq in (st.head, ackedTo] is acked (under
	// mu). In-order acks, the drain's case, only move it; acked holds the
	// out-of-order ones. Below st.head it means nothing.
	ackedTo uint64
}

type counters struct {
	appended, acked, rejected           uint64
	dropQuota, dropExpired, dropCorrupt uint64
	syncs, batches, txns                uint64
	quarantined, rebuilt                uint64
	unloggedQuota, unloggedReject       uint64
	lastQuotaLog, lastRejectLog         time.Time
}

// Stats is a snapshot of the queue. Counters are monotonic for the life of
// the Queue (they restart at zero at Open); Messages, Bytes, OldestTime and
// DiskBytes are current values.
type Stats struct {
	Messages   uint64    // records stored and not yet acknowledged or dropped (out-of-order acks count once the head passes them)
	Bytes      uint64    // their cost against MaxBytes (payload + RecordOverhead each)
	MaxBytes   uint64    // the quota
	OldestTime time.Time // append time of the oldest stored record; zero when empty
	LastSeq    uint64    // highest sequence number assigned
	Head       uint64    // every record with Seq <= Head is gone

	Appended uint64 // records made durable
	Acked    uint64 // records removed because they were acknowledged
	Rejected uint64 // records refused with ErrFull
	Dropped  Dropped

	Syncs            uint64 // fsyncs made for appends
	BatchesCommitted uint64 // group commits (each shares one fsync)
	DiskBytes        int64  // disk space used by badger's files (LSM tables, logs, value log)
	Quarantined      uint64 // corrupt stores moved aside by Open (0 or 1)
	Rebuilt          uint64 // times Open rebuilt missing/inconsistent metadata by scanning the store
}

// Dropped counts records removed without being acknowledged, by reason.
type Dropped struct {
	Quota   uint64 // oldest records removed to make room (drop-oldest)
	Expired uint64 // older than MaxAge
	Corrupt uint64 // failed their checksum or could not be read back (damaged store)
}

// Total is the sum of all reasons.
func (d Dropped) Total() uint64 { return d.Quota + d.Expired + d.Corrupt }

type reqState int

const (
	reqPending reqState = iota // in q.pending, not yet taken by a leader
	reqTaken                   // being committed by a leader
	reqDone                    // first/err are set
)

type appendReq struct {
	data  [][]byte
	cost  uint64
	state reqState
	wake  chan struct{} // buffered 1: signalled when done (synchronous requests; nil otherwise)
	done  chan struct{} // closed when done (asynchronous requests; nil otherwise)
	first uint64
	err   error
}

// Append stores data and returns its sequence number once the record is on
// disk (fsync'd). Concurrent Appends share one commit and one fsync.
//
// Under the Reject policy a record that does not fit in the quota fails with
// ErrFull; under DropOldest the oldest records are dropped to make room. A
// record larger than the quota fails with ErrTooLarge. If ctx is done before
// the record was handed to a commit, Append returns ctx's error and nothing
// was stored; once the commit started, Append waits for its outcome. On any
// other error the record may or may not have been stored.
func (q *Queue) Append(ctx context.Context, data []byte) (uint64, error) {
	return q.AppendBatch(ctx, [][]byte{data})
}

// AppendBatch stores records with consecutive sequence numbers, the first of
// which it returns, as one durable unit (see Append). The batch is accepted
// or rejected as a whole under the Reject policy.
func (q *Queue) AppendBatch(ctx context.Context, data [][]byte) (uint64, error) {
	r, err := q.newRequest(data, false)
	if err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("buffer: append: %w", err)
	}
	if err := q.enqueue(r); err != nil {
		return 0, err
	}
	q.await(ctx, r)
	return r.first, r.err
}

// Pending is a batch handed to the group commit by AppendBatchAsync.
type Pending struct{ r *appendReq }

// Done is closed when the batch's outcome is known.
func (p *Pending) Done() <-chan struct{} { return p.r.done }

// Wait blocks until the batch is committed and returns what AppendBatch
// would have: the first sequence number, or the error.
func (p *Pending) Wait() (uint64, error) {
	<-p.r.done
	return p.r.first, p.r.err
}

// AppendBatchAsync hands data to the group commit like AppendBatch but
// returns at once; the Pending reports the outcome. Batches take sequence
// numbers in the order of the calls that queued them (also when mixed with
// Append), so a caller that must keep an order calls it from one goroutine
// in that order and may wait for the outcomes later. Nothing can be taken
// back once queued. Validation errors (ErrTooLarge, ErrClosed) are returned
// at once.
func (q *Queue) AppendBatchAsync(data [][]byte) (*Pending, error) {
	r, err := q.newRequest(data, true)
	if err != nil {
		return nil, err
	}
	if err := q.enqueue(r); err != nil {
		return nil, err
	}
	return &Pending{r: r}, nil
}

// enqueue hands r to the group commit, starting a leader if none runs.
func (q *Queue) enqueue(r *appendReq) error {
	q.gmu.Lock()
	defer q.gmu.Unlock()
	if q.closing {
		return ErrClosed
	}
	q.pending = append(q.pending, r)
	if !q.leading {
		// The leader runs in a goroutine of its own, which Close waits
		// for (until leading and syncing are false).
		q.leading = true
		go q.lead()
	}
	return nil
}

func (q *Queue) newRequest(data [][]byte, async bool) (*appendReq, error) {
	if len(data) == 0 {
		return nil, errors.New("buffer: append: empty batch")
	}
	r := &appendReq{data: data}
	if async {
		r.done = make(chan struct{})
	} else {
		r.wake = make(chan struct{}, 1)
	}
	for _, d := range data {
		c := recordCost(len(d))
		if uint64(len(d)) > maxRecordBytes || c > uint64(q.cfg.MaxBytes) {
			return nil, fmt.Errorf("buffer: append %d bytes (quota %s): %w", len(d), q.cfg.MaxBytes, ErrTooLarge)
		}
		r.cost += c
	}
	if r.cost > uint64(q.cfg.MaxBytes) {
		return nil, fmt.Errorf("buffer: append batch of %d bytes (quota %s): %w", r.cost, q.cfg.MaxBytes, ErrTooLarge)
	}
	return r, nil
}

// await waits for r to be committed, or for ctx while r is still pending.
func (q *Queue) await(ctx context.Context, r *appendReq) {
	done := ctx.Done()
	for {
		select {
		case <-r.wake:
		case <-done:
		}
		q.gmu.Lock()
		st := r.state
		if st == reqPending && ctx.Err() != nil {
			q.pending = slices.DeleteFunc(q.pending, func(p *appendReq) bool { return p == r })
			q.gmu.Unlock()
			r.err = fmt.Errorf("buffer: append: %w", ctx.Err())
			return
		}
		q.gmu.Unlock()
		if st == reqDone {
			return
		}
		if ctx.Err() != nil {
			done = nil // taken: the outcome comes within one commit
		}
	}
}

// lead writes batches to badger while requests are pending. Making them
// durable is left to syncLoop, so the leader writes the next batch while
// the previous ones are being synced: one fsync covers every batch written
// before it started, and writing (CPU) overlaps syncing (the disk).
func (q *Queue) lead() {
	for {
		q.gmu.Lock()
		// Appenders released by the previous commit are likely about to
		// append again: give them a moment to join this batch.
		for i := 0; i < lingerYields && len(q.pending) < q.lastBatch; i++ {
			q.gmu.Unlock()
			runtime.Gosched()
			q.gmu.Lock()
		}
		if len(q.pending) == 0 {
			q.leading = false
			q.gcond.Broadcast()
			q.gmu.Unlock()
			return
		}
		n, bytes := 0, uint64(0)
		for n < len(q.pending) && n < maxBatchRequests && (n == 0 || bytes+q.pending[n].cost <= maxBatchBytes) {
			bytes += q.pending[n].cost
			q.pending[n].state = reqTaken
			n++
		}
		batch := slices.Clone(q.pending[:n])
		q.lastBatch = n
		q.pending = slices.Delete(q.pending, 0, n)
		q.gmu.Unlock()

		wrote := q.write(batch)

		q.gmu.Lock()
		q.written = append(q.written, batch...)
		q.unsynced = q.unsynced || wrote
		if !q.syncing {
			q.syncing = true
			go q.syncLoop()
		}
		q.gmu.Unlock()
	}
}

// syncLoop makes the written batches durable, all those written since the
// previous sync with one sync, and reports their outcome, until none is
// left.
func (q *Queue) syncLoop() {
	for {
		q.gmu.Lock()
		batch, need := q.written, q.unsynced
		q.written, q.unsynced = nil, false
		if len(batch) == 0 {
			q.syncing = false
			q.gcond.Broadcast()
			q.gmu.Unlock()
			return
		}
		q.gmu.Unlock()

		var err error
		if need {
			err = q.syncStore()
			if err != nil && errors.Is(err, syscall.EIO) {
				err = q.fail(err)
			}
		}
		var records uint64
		for _, r := range batch {
			if r.err != nil {
				continue
			}
			if err != nil {
				r.err = fmt.Errorf("buffer: append: commit: %w", err)
				continue
			}
			records += uint64(len(r.data))
		}
		q.mu.Lock()
		if need {
			q.stats.syncs++
			q.stats.batches++
		}
		q.stats.appended += records
		q.mu.Unlock()

		q.gmu.Lock()
		for _, r := range batch {
			r.state = reqDone
			if r.done != nil {
				close(r.done)
			} else {
				r.wake <- struct{}{}
			}
		}
		q.gmu.Unlock()
		if records > 0 {
			select {
			case q.notify <- struct{}{}:
			default:
			}
		}
	}
}

// fail records the store failure cause (the first one wins) and returns
// it wrapped in ErrStoreFailed.
func (q *Queue) fail(cause error) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.failure == nil {
		q.failure = fmt.Errorf("%w: sync %s: %w", ErrStoreFailed, q.dir, cause)
		close(q.failed)
	}
	return q.failure
}

// storeFailure is the store failure, nil while the store works.
func (q *Queue) storeFailure() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.failure
}

// syncStore makes every write to badger that completed before the call
// durable (see storeSyncer).
func (q *Queue) syncStore() error {
	if q.syncFault != nil {
		if err := q.syncFault(q.dir); err != nil {
			return err
		}
	}
	ok, err := q.syncer.sync(q.bigValues.Swap(false))
	if !ok && err == nil {
		err = q.db.Sync()
	}
	return err
}

// write stores a batch: quota, one or more badger transactions. It sets
// first of every request it wrote and err of every one it could not, and
// says whether it wrote any (which then need a sync, see syncLoop).
func (q *Queue) write(batch []*appendReq) bool {
	q.wmu.Lock()
	defer q.wmu.Unlock()
	if q.db == nil {
		for _, r := range batch {
			r.err = ErrClosed
		}
		return false
	}
	if err := q.storeFailure(); err != nil {
		for _, r := range batch {
			r.err = err
		}
		return false
	}
	if free, err := q.freeSpace(batch); err == nil && free < DiskReserve {
		for _, r := range batch {
			r.err = fmt.Errorf("buffer: append: %d MiB free in %s, %d MiB kept for the store: %w", free>>20, q.dir, DiskReserve>>20, ErrDiskFull)
		}
		q.noteDisk(true, free)
		return false
	} else if err == nil {
		q.noteDisk(false, free)
	}
	now := q.now().UTC()
	w := q.newWriter()
	var accepted []*appendReq
	for _, r := range batch {
		if w.st.bytes+r.cost > uint64(q.cfg.MaxBytes) {
			if q.cfg.WhenFull == Reject {
				r.err = ErrFull
				w.delta.rejected += uint64(len(r.data))
				continue
			}
			need := w.st.bytes + r.cost - uint64(q.cfg.MaxBytes)
			var err error
			if w.txn != nil {
				// Make this batch's earlier records visible, so that they
				// can be dropped too if the quota is that small.
				err = w.commitTxn()
			}
			if err == nil {
				err = q.dropForQuota(w, need)
			}
			if err != nil {
				r.err = fmt.Errorf("buffer: append: make room: %w", err)
				continue
			}
		}
		r.first = w.st.lastSeq + 1
		var err error
		for _, d := range r.data {
			w.st.lastSeq++
			err = w.set(recordKey(w.st.lastSeq, len(d)), encodeRecordValue(now, d))
			if err != nil {
				break
			}
			w.st.count++
			w.st.bytes += recordCost(len(d))
		}
		if err != nil {
			r.err = fmt.Errorf("buffer: append: %w", err)
			continue
		}
		accepted = append(accepted, r)
	}
	if err := w.flush(); err != nil {
		for _, r := range accepted {
			r.err = fmt.Errorf("buffer: append: commit: %w", err)
		}
		accepted = nil
	}
	q.logDrops(now, false)
	if q.ackFlushNeeded() {
		if err := q.flushAcksLocked(); err != nil {
			q.log.Warn("buffer: persisting acknowledgements failed; will retry", "err", err)
		}
	}
	return len(accepted) > 0
}

// Notify returns a channel that receives a value (coalesced, buffered 1)
// after records were appended, so that a drain loop can sleep while the
// queue is empty. Check Read after every receive; a value may be stale.
func (q *Queue) Notify() <-chan struct{} { return q.notify }

// Read returns up to max records with Seq > after, in Seq order, skipping
// acknowledged and dropped ones, stopping once their payloads reach
// maxBytes (at least one record is returned when any is available;
// maxBytes <= 0 means no byte limit). It starts at the remembered head, never
// scanning removed records. Records that fail their checksum are dropped
// (reason "corrupt") and skipped. The returned Data are copies.
func (q *Queue) Read(after uint64, max int, maxBytes int) ([]Record, error) {
	if max <= 0 {
		return nil, nil
	}
	out, corrupt, err := q.read(after, max, maxBytes)
	if err != nil {
		return nil, err
	}
	if len(corrupt) > 0 {
		if err := q.dropKeys(corrupt); err != nil {
			return out, fmt.Errorf("buffer: read: drop corrupt records: %w", err)
		}
	}
	return out, nil
}

// readSlab is the size of the buffers Read copies values into.
const readSlab = 64 << 10

func (q *Queue) read(after uint64, max int, maxBytes int) ([]Record, [][]byte, error) {
	q.life.RLock()
	defer q.life.RUnlock()
	if q.db == nil {
		return nil, nil, ErrClosed
	}
	q.mu.Lock()
	start := max64(after, q.st.head) + 1
	last := q.st.lastSeq
	q.mu.Unlock()
	if start > last {
		return nil, nil, nil
	}
	acks := q.ackView()
	out := make([]Record, 0, min(uint64(max), last-start+1, 1024))
	var corrupt [][]byte
	size := 0
	// The values of one page are copied into shared slabs: one allocation
	// per readSlab bytes instead of one per record.
	var slab, val []byte
	copyValue := func(v []byte) error {
		if cap(slab)-len(slab) < len(v) {
			c := readSlab
			if len(v) > c {
				c = len(v)
			}
			slab = make([]byte, 0, c)
		}
		n := len(slab)
		slab = append(slab, v...)
		val = slab[n:len(slab):len(slab)]
		return nil
	}
	err := q.db.View(func(txn *badger.Txn) error {
		// No value prefetching: badger would start a goroutine per record
		// to copy a value that is read once, right away. Values up to the
		// value threshold are read straight from the mmap'd tables.
		opts := badger.IteratorOptions{Prefix: []byte{recordPrefix}}
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Seek(seekKey(start)); it.Valid(); it.Next() {
			item := it.Item()
			if bytes.Equal(item.Key(), sentinelKey) {
				continue
			}
			seq, _, kerr := parseRecordKey(item.Key())
			if kerr == nil && q.isAcked(acks, seq) {
				continue
			}
			val = nil
			err := item.Value(copyValue)
			rec, derr := decodeRecord(item.Key(), val)
			if err == nil {
				err = derr
			}
			if err != nil {
				// A value badger cannot read (damaged value log) is as
				// lost as one failing its checksum.
				q.log.Error("buffer: dropping corrupt record", "seq", seq, "err", err)
				corrupt = append(corrupt, item.KeyCopy(nil))
				continue
			}
			out = append(out, rec)
			size += len(rec.Data)
			if len(out) >= max || (maxBytes > 0 && size >= maxBytes) {
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("buffer: read after %d: %w", after, err)
	}
	return out, corrupt, nil
}

// ackView is a snapshot of which records are acked; acks only ever
// add to it, so a stale view only misses recent acks.
type ackView struct {
	to  uint64 // every seq in (head, to] is acked
	ooo bool   // out-of-order acks exist: look them up in q.acked
}

func (q *Queue) ackView() ackView {
	q.mu.Lock()
	defer q.mu.Unlock()
	return ackView{to: q.ackedTo, ooo: len(q.acked) > 0}
}

// isAcked reports whether seq (> head) is acked, as of v or later.
func (q *Queue) isAcked(v ackView, seq uint64) bool {
	if seq <= v.to {
		return true
	}
	if !v.ooo {
		return false
	}
	q.mu.Lock()
	_, ok := q.acked[seq]
	q.mu.Unlock()
	return ok
}

// Ack marks records as done (delivered): they are never returned by Read
// again and their space is freed once the head passes them. Acks may arrive
// in any order; acking an unknown, already acked or dropped seq is a no-op.
// Ack does not wait for an fsync: after a crash, recently acked records may
// be delivered again.
func (q *Queue) Ack(seqs ...uint64) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return ErrClosed
	}
	q.ackedTo = max(q.ackedTo, q.st.head)
	for _, s := range seqs {
		switch {
		case s <= q.ackedTo || s > q.st.lastSeq:
			// Already acked, removed, or unknown.
		case s == q.ackedTo+1:
			q.ackedTo++
			for len(q.acked) > 0 {
				if _, ok := q.acked[q.ackedTo+1]; !ok {
					break
				}
				delete(q.acked, q.ackedTo+1)
				q.ackedTo++
			}
		default:
			q.acked[s] = struct{}{}
		}
	}
	q.mu.Unlock()
	if !q.ackFlushNeeded() || !q.wmu.TryLock() {
		// An append commit in progress (or Run) persists them.
		return nil
	}
	defer q.wmu.Unlock()
	if err := q.flushAcksLocked(); err != nil {
		return fmt.Errorf("buffer: ack: %w", err)
	}
	return nil
}

// ackFlushNeeded says whether the head can advance or too many acks wait.
func (q *Queue) ackFlushNeeded() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.ackedTo > q.st.head {
		return true
	}
	_, next := q.acked[q.st.head+1]
	return next || len(q.acked) >= q.ackLimit
}

// flushAcksLocked deletes acked records from the head on and, if too many
// out-of-order acks wait, those too. Call with wmu held.
func (q *Queue) flushAcksLocked() error {
	if q.db == nil {
		return ErrClosed
	}
	w := q.newWriter()
	if err := q.removeFront(w, false, func(uint64, int, []byte) dropReason { return keep }); err != nil {
		return err
	}
	if err := w.flush(); err != nil {
		return err
	}
	q.mu.Lock()
	var rest []uint64
	for s := range q.acked {
		if s <= q.st.head {
			delete(q.acked, s)
		} else {
			rest = append(rest, s)
		}
	}
	q.mu.Unlock()
	if len(rest) < q.ackLimit {
		return nil
	}
	slices.Sort(rest)
	keys := make([][]byte, 0, len(rest))
	err := q.db.View(func(txn *badger.Txn) error {
		opts := badger.IteratorOptions{Prefix: []byte{recordPrefix}}
		it := txn.NewIterator(opts)
		defer it.Close()
		for _, s := range rest {
			it.Seek(seekKey(s))
			if it.Valid() {
				if seq, _, err := parseRecordKey(it.Item().Key()); err == nil && seq == s {
					keys = append(keys, it.Item().KeyCopy(nil))
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	w = q.newWriter()
	for _, k := range keys {
		if err := w.remove(k, reasonAck); err != nil {
			return err
		}
	}
	return w.flush()
}

// dropKeys deletes specific records as corrupt, if they still exist.
func (q *Queue) dropKeys(keys [][]byte) error {
	q.wmu.Lock()
	defer q.wmu.Unlock()
	if q.db == nil {
		return ErrClosed
	}
	var present [][]byte
	err := q.db.View(func(txn *badger.Txn) error {
		for _, k := range keys {
			_, err := txn.Get(k)
			switch {
			case err == nil:
				present = append(present, k)
			case !errors.Is(err, badger.ErrKeyNotFound):
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	w := q.newWriter()
	for _, k := range present {
		if err := w.remove(k, reasonCorrupt); err != nil {
			return err
		}
	}
	return w.flush()
}

// dropForQuota removes records from the head until need bytes are freed
// (acked records first count as freed). Call with wmu held.
func (q *Queue) dropForQuota(w *writer, need uint64) error {
	target := w.st.bytes - min(need, w.st.bytes)
	return q.removeFront(w, false, func(_ uint64, n int, _ []byte) dropReason {
		if w.st.bytes <= target {
			return keep
		}
		return reasonQuota
	})
}

type dropReason int

const (
	keep dropReason = iota
	reasonAck
	reasonQuota
	reasonExpired
	reasonCorrupt
)

// removeFront walks the records from the head in order, deleting acked
// records and those decide marks, and stops at the first record it keeps.
// Records missing between the head and that record (deleted out of order)
// are skipped by moving the head. Call with wmu held.
func (q *Queue) removeFront(w *writer, values bool, decide func(seq uint64, n int, value []byte) dropReason) (err error) {
	acks := q.ackView()
	return q.db.View(func(txn *badger.Txn) error {
		opts := badger.IteratorOptions{Prefix: []byte{recordPrefix}, PrefetchValues: values, PrefetchSize: 64}
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Seek(seekKey(w.st.head + 1)); it.Valid(); it.Next() {
			item := it.Item()
			if bytes.Equal(item.Key(), sentinelKey) {
				continue
			}
			seq, n, err := parseRecordKey(item.Key())
			if err != nil {
				if err := w.remove(item.KeyCopy(nil), reasonCorrupt); err != nil {
					return err
				}
				continue
			}
			reason := reasonAck
			if !q.isAcked(acks, seq) {
				var v []byte
				if values {
					if v, err = item.ValueCopy(nil); err != nil {
						return fmt.Errorf("record %d: %w", seq, err)
					}
				}
				reason = decide(seq, n, v)
			}
			if reason == keep {
				if seq-1 > w.st.head {
					w.st.head, w.dirty = seq-1, true
				}
				return nil
			}
			if err := w.remove(item.KeyCopy(nil), reason); err != nil {
				return err
			}
			w.st.head = max64(w.st.head, seq)
		}
		// Everything visible is gone. Records of w's open transaction are
		// not visible, so the head stays at the last record removed.
		if !w.appends && w.st.head != w.st.lastSeq {
			w.st.head, w.dirty = w.st.lastSeq, true
		}
		return nil
	})
}

// logDrops reports quota drops and rejections at most once per
// dropLogInterval (force: now). Call with wmu held.
func (q *Queue) logDrops(now time.Time, force bool) {
	q.mu.Lock()
	s := &q.stats
	var quota, reject uint64
	if s.unloggedQuota > 0 && (force || now.Sub(s.lastQuotaLog) >= dropLogInterval) {
		quota, s.unloggedQuota, s.lastQuotaLog = s.unloggedQuota, 0, now
	}
	if s.unloggedReject > 0 && (force || now.Sub(s.lastRejectLog) >= dropLogInterval) {
		reject, s.unloggedReject, s.lastRejectLog = s.unloggedReject, 0, now
	}
	totalQuota, totalReject := s.dropQuota, s.rejected
	q.mu.Unlock()
	if quota > 0 {
		q.log.Warn("buffer: quota reached, dropped oldest records", "dropped", quota, "dropped_total", totalQuota, "max_bytes", q.cfg.MaxBytes.String())
	}
	if reject > 0 {
		q.log.Warn("buffer: quota reached, rejected new records", "rejected", reject, "rejected_total", totalReject, "max_bytes", q.cfg.MaxBytes.String())
	}
}

func max64(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

// Free space is checked again after freeCheckInterval or once
// freeCheckBytes were written since the last check, whichever comes first:
// statfs costs tens of µs, a group commit writes far less than DiskReserve.
const (
	freeCheckInterval = 10 * time.Millisecond
	freeCheckBytes    = DiskReserve / 8
)

// freeSpace returns the free space of the store's file system, as of at most
// freeCheckInterval and freeCheckBytes ago, counting batch as written. Call
// with wmu held.
func (q *Queue) freeSpace(batch []*appendReq) (uint64, error) {
	var cost uint64
	for _, r := range batch {
		cost += r.cost
	}
	fc := &q.freeCheck
	now := time.Now()
	if fc.ok && now.Sub(fc.at) < freeCheckInterval && fc.written+cost < freeCheckBytes && fc.free >= DiskReserve+freeCheckBytes {
		fc.written += cost
		return fc.free - fc.written, nil
	}
	free, err := freeSpace(q.dir)
	if err != nil {
		fc.ok = false
		return 0, err
	}
	*fc = freeCheck{ok: true, at: now, free: free, written: 0}
	return free, nil
}

type freeCheck struct {
	ok      bool
	at      time.Time
	free    uint64 // as measured at at
	written uint64 // batches' cost since
}

// noteDisk logs when appends start or stop being refused for lack of disk
// space.
func (q *Queue) noteDisk(full bool, free uint64) {
	q.mu.Lock()
	was := q.diskFull
	q.diskFull = full
	q.mu.Unlock()
	switch {
	case full && !was:
		q.log.Error("buffer: disk full: refusing new records until space is freed", "dir", q.dir, "free_mib", free>>20, "reserve_mib", DiskReserve>>20)
	case was && !full:
		q.log.Info("buffer: disk space available again; accepting records", "free_mib", free>>20)
	}
}
