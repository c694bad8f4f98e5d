package buffer

import (
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/skl"
)

// tuning holds the badger limits a writer must respect.
type tuning struct {
	valueThreshold int64
	maxTxnBytes    int64 // badger rejects a txn at 15% of MemTableSize
	maxTxnCount    int64
}

func newTuning(memTableSize, valueThreshold int64) tuning {
	maxBatch := 15 * memTableSize / 100
	return tuning{
		valueThreshold: valueThreshold,
		maxTxnBytes:    maxBatch * 8 / 10,
		maxTxnCount:    maxBatch / int64(skl.MaxNodeSize) * 8 / 10,
	}
}

// writer applies changes in as many badger transactions as the size limits
// require. Every transaction carries the metadata for the state after it,
// so that the store is consistent after each commit. Use with wmu held.
type writer struct {
	q       *Queue
	txn     *badger.Txn
	st      meta // working state
	dirty   bool
	appends bool // the open transaction holds new records
	n       int64
	size    int64
	delta   counters
	gone    []uint64 // seqs removed, to forget from q.acked
}

func (q *Queue) newWriter() *writer {
	q.mu.Lock()
	st := q.st
	q.mu.Unlock()
	return &writer{q: q, st: st}
}

func (w *writer) reserve(k, v []byte) error {
	est := int64(len(k)) + 12 + 10
	if int64(len(v)) < w.q.tuning.valueThreshold {
		est = int64(len(k)) + int64(len(v)) + 2 + 10
	}
	if w.txn != nil && (w.n+2 >= w.q.tuning.maxTxnCount || w.size+est+metaLen+32 >= w.q.tuning.maxTxnBytes) {
		if err := w.commitTxn(); err != nil {
			return err
		}
	}
	if w.txn == nil {
		w.txn = w.q.db.NewTransaction(true)
	}
	w.n++
	w.size += est
	w.dirty = true
	return nil
}

func (w *writer) set(k, v []byte) error {
	if err := w.reserve(k, v); err != nil {
		return err
	}
	if err := w.txn.Set(k, v); err != nil {
		return fmt.Errorf("set %x: %w", k, err)
	}
	if int64(len(v)) >= w.q.tuning.valueThreshold {
		w.q.bigValues.Store(true)
	}
	w.appends = true
	return nil
}

// remove deletes a record key and accounts for it under reason.
func (w *writer) remove(k []byte, reason dropReason) error {
	seq, n, kerr := parseRecordKey(k)
	if err := w.reserve(k, nil); err != nil {
		return err
	}
	if err := w.txn.Delete(k); err != nil {
		return fmt.Errorf("delete record %x: %w", k, err)
	}
	if kerr != nil {
		// A malformed key was never counted: just remove it.
		w.delta.dropCorrupt++
		return nil
	}
	w.st.count--
	w.st.bytes -= min(recordCost(n), w.st.bytes)
	w.gone = append(w.gone, seq)
	switch reason {
	case reasonAck:
		w.delta.acked++
	case reasonQuota:
		w.delta.dropQuota++
	case reasonExpired:
		w.delta.dropExpired++
	case reasonCorrupt:
		w.delta.dropCorrupt++
	}
	return nil
}

// commitTxn writes the metadata and commits the open transaction, then
// publishes the new state.
func (w *writer) commitTxn() error {
	if w.txn == nil {
		w.txn = w.q.db.NewTransaction(true)
	}
	txn := w.txn
	w.txn, w.n, w.size, w.appends = nil, 0, 0, false
	defer txn.Discard()
	err := txn.Set(metaKey, encodeMeta(w.st))
	if err == nil {
		err = txn.Commit()
	}
	q := w.q
	q.mu.Lock()
	defer q.mu.Unlock()
	if err != nil {
		// Never reuse sequence numbers that may have reached the disk.
		q.st.lastSeq = max64(q.st.lastSeq, w.st.lastSeq)
		w.st = q.st
		w.gone, w.dirty = nil, false
		return fmt.Errorf("commit: %w", err)
	}
	q.st = w.st
	for _, s := range w.gone {
		delete(q.acked, s)
	}
	q.reclaim += uint64(len(w.gone))
	d := &w.delta
	s := &q.stats
	s.acked += d.acked
	s.dropQuota += d.dropQuota
	s.unloggedQuota += d.dropQuota
	s.dropExpired += d.dropExpired
	s.dropCorrupt += d.dropCorrupt
	s.txns++
	w.delta = counters{rejected: d.rejected}
	w.gone, w.dirty = w.gone[:0], false
	return nil
}

// flush commits pending changes (if any) and records the rejections.
func (w *writer) flush() error {
	var err error
	if w.dirty || w.txn != nil {
		err = w.commitTxn()
	}
	if w.delta.rejected > 0 {
		w.q.mu.Lock()
		w.q.stats.rejected += w.delta.rejected
		w.q.stats.unloggedReject += w.delta.rejected
		w.q.mu.Unlock()
		w.delta.rejected = 0
	}
	return err
}
