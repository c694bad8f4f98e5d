package buffer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func testConfig() Config {
	c := Config{}
	c.Defaults()
	c.MaxAge = 0
	return c
}

func openTest(t testing.TB, dir string, cfg Config) *Queue {
	t.Helper()
	q, err := Open(dir, cfg, testLogger(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = q.Close() })
	return q
}

func payload(i int) []byte { return []byte(fmt.Sprintf("message-%06d", i)) }

func appendN(t testing.TB, q *Queue, from, n int) []uint64 {
	t.Helper()
	seqs := make([]uint64, 0, n)
	for i := from; i < from+n; i++ {
		s, err := q.Append(context.Background(), payload(i))
		if err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
		seqs = append(seqs, s)
	}
	return seqs
}

// readAll drains the queue from after on without acking, in small pages.
func readAll(t testing.TB, q *Queue, after uint64) []Record {
	t.Helper()
	var out []Record
	for {
		recs, err := q.Read(after, 7, 0)
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		if len(recs) == 0 {
			return out
		}
		out = append(out, recs...)
		after = recs[len(recs)-1].Seq
	}
}

func seqsOf(recs []Record) []uint64 {
	s := make([]uint64, len(recs))
	for i, r := range recs {
		s[i] = r.Seq
	}
	return s
}

func seqRange(from, to uint64) []uint64 {
	var s []uint64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

func TestAppendReadOrder(t *testing.T) {
	q := openTest(t, t.TempDir(), testConfig())
	before := time.Now().Add(-time.Second)
	seqs := appendN(t, q, 0, 50)
	if diff := cmp.Diff(seqRange(1, 50), seqs); diff != "" {
		t.Fatalf("seqs (-want +got):\n%s", diff)
	}
	recs := readAll(t, q, 0)
	if diff := cmp.Diff(seqRange(1, 50), seqsOf(recs)); diff != "" {
		t.Fatalf("read seqs (-want +got):\n%s", diff)
	}
	for i, r := range recs {
		if !bytes.Equal(r.Data, payload(i)) {
			t.Errorf("record %d: data %q, want %q", r.Seq, r.Data, payload(i))
		}
		if r.Time.Before(before) || r.Time.After(time.Now().Add(time.Second)) {
			t.Errorf("record %d: time %v not around now", r.Seq, r.Time)
		}
	}
	// after, max and maxBytes.
	got, err := q.Read(10, 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]uint64{11, 12, 13}, seqsOf(got)); diff != "" {
		t.Errorf("Read(10,3) (-want +got):\n%s", diff)
	}
	got, err = q.Read(10, 100, len(payload(0))*2)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]uint64{11, 12}, seqsOf(got)); diff != "" {
		t.Errorf("Read(10,100,2 payloads) (-want +got):\n%s", diff)
	}
	got, err = q.Read(10, 100, 1)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]uint64{11}, seqsOf(got)); diff != "" {
		t.Errorf("Read with tiny maxBytes returns one record (-want +got):\n%s", diff)
	}
	if got, _ := q.Read(50, 10, 0); len(got) != 0 {
		t.Errorf("Read past the end returned %v", seqsOf(got))
	}
	// Returned data are copies.
	got[0].Data[0] = 'X'
	again, _ := q.Read(10, 1, 0)
	if !bytes.Equal(again[0].Data, payload(10)) {
		t.Errorf("modifying read data changed the store: %q", again[0].Data)
	}
	st := q.Stats()
	if st.Messages != 50 || st.Appended != 50 || st.Bytes != uint64(50*(len(payload(0))+RecordOverhead)) {
		t.Errorf("stats = %+v, want 50 messages of %d bytes", st, len(payload(0))+RecordOverhead)
	}
	if st.OldestTime.IsZero() || st.DiskBytes <= 0 {
		t.Errorf("stats OldestTime %v DiskBytes %d, want set", st.OldestTime, st.DiskBytes)
	}
}

func TestAppendBatch(t *testing.T) {
	q := openTest(t, t.TempDir(), testConfig())
	appendN(t, q, 0, 2)
	first, err := q.AppendBatch(context.Background(), [][]byte{[]byte("a"), []byte("b"), []byte("c")})
	if err != nil || first != 3 {
		t.Fatalf("AppendBatch = %d, %v; want 3", first, err)
	}
	recs := readAll(t, q, 2)
	var data []string
	for _, r := range recs {
		data = append(data, string(r.Data))
	}
	if diff := cmp.Diff([]string{"a", "b", "c"}, data); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if _, err := q.AppendBatch(context.Background(), nil); err == nil {
		t.Error("empty batch accepted")
	}
}

func TestDurableAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	q, err := Open(dir, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, q, 0, 20)
	if err := q.Ack(1, 2, 3, 4, 5); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = openTest(t, dir, cfg)
	if diff := cmp.Diff(seqRange(6, 20), seqsOf(readAll(t, q, 0))); diff != "" {
		t.Fatalf("after reopen (-want +got):\n%s", diff)
	}
	st := q.Stats()
	if st.Messages != 15 || st.Head != 5 || st.LastSeq != 20 || st.Rebuilt != 0 || st.Quarantined != 0 {
		t.Errorf("stats after reopen = %+v", st)
	}
	s, err := q.Append(context.Background(), []byte("next"))
	if err != nil || s != 21 {
		t.Errorf("Append after reopen = %d, %v; want 21 (seqs never reused)", s, err)
	}
	// Draining everything and reopening keeps the sequence going.
	if err := q.Ack(seqRange(6, 21)...); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = openTest(t, dir, cfg)
	if st := q.Stats(); st.Messages != 0 || st.Bytes != 0 || st.LastSeq != 21 {
		t.Errorf("stats after drain and reopen = %+v", st)
	}
	if s, _ := q.Append(context.Background(), []byte("x")); s != 22 {
		t.Errorf("seq after drained reopen = %d, want 22", s)
	}
}

func TestAckOutOfOrder(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	q, err := Open(dir, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, q, 0, 10)
	if err := q.Ack(3, 5, 2, 999, 0); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]uint64{1, 4, 6, 7, 8, 9, 10}, seqsOf(readAll(t, q, 0))); diff != "" {
		t.Errorf("acked records still read (-want +got):\n%s", diff)
	}
	if st := q.Stats(); st.Head != 0 || st.Messages != 10 {
		t.Errorf("head moved before the oldest was acked: %+v", st)
	}
	if err := q.Ack(1); err != nil {
		t.Fatal(err)
	}
	if st := q.Stats(); st.Head != 3 || st.Messages != 7 || st.Acked != 3 {
		t.Errorf("after acking 1: head %d messages %d acked %d; want 3, 7, 3", st.Head, st.Messages, st.Acked)
	}
	if err := q.Ack(1, 2); err != nil { // already acked: no-op
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	// Out-of-order acks not yet behind the head are not persisted: 5 may
	// come back (a duplicate), nothing before the head does.
	q = openTest(t, dir, cfg)
	got := seqsOf(readAll(t, q, 0))
	if diff := cmp.Diff([]uint64{4, 5, 6, 7, 8, 9, 10}, got); diff != "" {
		t.Errorf("after reopen (-want +got):\n%s", diff)
	}
	if err := q.Ack(4, 5); err != nil {
		t.Fatal(err)
	}
	if st := q.Stats(); st.Head != 5 || st.Messages != 5 {
		t.Errorf("stats = %+v, want head 5, 5 messages", st)
	}
}

func TestManyOutOfOrderAcks(t *testing.T) {
	q := openTest(t, t.TempDir(), testConfig())
	q.ackLimit = 500
	n := q.ackLimit + 100
	batch := make([][]byte, n)
	for i := range batch {
		batch[i] = []byte{byte(i)}
	}
	if _, err := q.AppendBatch(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	// Ack everything except the first record: beyond the memory limit the
	// acked records are deleted one by one.
	if err := q.Ack(seqRange(2, uint64(n))...); err != nil {
		t.Fatal(err)
	}
	if st := q.Stats(); st.Messages != 1 || st.Acked != uint64(n-1) {
		t.Errorf("stats = messages %d acked %d; want 1, %d", st.Messages, st.Acked, n-1)
	}
	if diff := cmp.Diff([]uint64{1}, seqsOf(readAll(t, q, 0))); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if err := q.Ack(1); err != nil {
		t.Fatal(err)
	}
	if st := q.Stats(); st.Messages != 0 || st.Bytes != 0 || st.Head != uint64(n) {
		t.Errorf("stats after acking all = %+v", st)
	}
}

func TestQuota(t *testing.T) {
	const size = 1000 - RecordOverhead // cost 1000
	rec := bytes.Repeat([]byte{'x'}, size)
	cfg := testConfig()
	cfg.MaxBytes = 100 * KiB // 102 records of cost 1000

	t.Run("drop-oldest", func(t *testing.T) {
		dir := t.TempDir()
		cfg := cfg
		cfg.WhenFull = DropOldest
		q, err := Open(dir, cfg, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		for range 150 {
			if _, err := q.Append(context.Background(), rec); err != nil {
				t.Fatalf("Append: %v", err)
			}
		}
		st := q.Stats()
		if st.Dropped.Quota != 48 || st.Messages != 102 || st.Bytes > uint64(cfg.MaxBytes) {
			t.Errorf("stats = %+v; want 48 dropped (quota), 102 kept, bytes <= %d", st, cfg.MaxBytes)
		}
		recs := readAll(t, q, 0)
		if diff := cmp.Diff(seqRange(49, 150), seqsOf(recs)); diff != "" {
			t.Errorf("kept records (-want +got):\n%s", diff)
		}
		// Ack of a dropped seq is a no-op; acked records free room first.
		if err := q.Ack(1, 49, 50); err != nil {
			t.Fatal(err)
		}
		if _, err := q.Append(context.Background(), rec); err != nil {
			t.Fatal(err)
		}
		st = q.Stats()
		if st.Dropped.Quota != 48 || st.Acked != 2 || st.Messages != 101 {
			t.Errorf("after acks: %+v; want no new drops, 2 acked, 101 messages", st)
		}
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
		q = openTest(t, dir, cfg)
		if diff := cmp.Diff(seqRange(51, 151), seqsOf(readAll(t, q, 0))); diff != "" {
			t.Errorf("after reopen (-want +got):\n%s", diff)
		}
	})

	t.Run("reject", func(t *testing.T) {
		cfg := cfg
		cfg.WhenFull = Reject
		q := openTest(t, t.TempDir(), cfg)
		for i := range 102 {
			if _, err := q.Append(context.Background(), rec); err != nil {
				t.Fatalf("Append %d: %v", i, err)
			}
		}
		_, err := q.Append(context.Background(), rec)
		if !errors.Is(err, ErrFull) {
			t.Fatalf("Append over quota = %v, want ErrFull", err)
		}
		if _, err := q.AppendBatch(context.Background(), [][]byte{rec[:300], rec[:300]}); !errors.Is(err, ErrFull) {
			t.Fatalf("AppendBatch over quota = %v, want ErrFull", err)
		}
		st := q.Stats()
		if st.Rejected != 3 || st.Dropped.Total() != 0 || st.Messages != 102 {
			t.Errorf("stats = %+v; want 3 rejected, nothing dropped", st)
		}
		if err := q.Ack(1); err != nil {
			t.Fatal(err)
		}
		s, err := q.Append(context.Background(), rec)
		if err != nil || s != 103 {
			t.Errorf("Append after ack = %d, %v; want 103 (rejected appends use no seq)", s, err)
		}
	})

	t.Run("drop-oldest concurrent", func(t *testing.T) {
		// Group commits whose own records exceed the quota.
		cfg := cfg
		cfg.MaxBytes = 64 * KiB
		q := openTest(t, t.TempDir(), cfg)
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				for range 40 {
					if _, err := q.Append(context.Background(), rec); err != nil {
						t.Errorf("Append: %v", err)
						return
					}
				}
			})
		}
		wg.Wait()
		st := q.Stats()
		if st.Bytes > uint64(cfg.MaxBytes) || st.Messages+st.Dropped.Quota != 640 || st.Appended != 640 {
			t.Errorf("stats = %+v; want bytes <= %d and messages+dropped = 640", st, cfg.MaxBytes)
		}
		recs := readAll(t, q, 0)
		if uint64(len(recs)) != st.Messages || len(recs) == 0 || recs[len(recs)-1].Seq != 640 {
			t.Errorf("read %d records (last %v), stats say %d", len(recs), seqsOf(recs[len(recs)-1:]), st.Messages)
		}
		if diff := cmp.Diff(seqRange(641-uint64(len(recs)), 640), seqsOf(recs)); diff != "" {
			t.Errorf("kept records are not the newest (-want +got):\n%s", diff)
		}
	})

	t.Run("too large", func(t *testing.T) {
		q := openTest(t, t.TempDir(), cfg)
		_, err := q.Append(context.Background(), make([]byte, int(cfg.MaxBytes)))
		if !errors.Is(err, ErrTooLarge) {
			t.Errorf("Append of a record larger than the quota = %v, want ErrTooLarge", err)
		}
		if st := q.Stats(); st.Messages != 0 || st.LastSeq != 0 {
			t.Errorf("stats = %+v, want empty", st)
		}
	})
}

func TestExpiry(t *testing.T) {
	cfg := testConfig()
	cfg.MaxAge = time.Hour
	q := openTest(t, t.TempDir(), cfg)
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	q.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	appendN(t, q, 0, 5)
	advance(30 * time.Minute)
	appendN(t, q, 5, 3)
	if err := q.Ack(2); err != nil { // acked out of order, then expired
		t.Fatal(err)
	}
	if n, err := q.expire(); err != nil || n != 0 {
		t.Fatalf("expire before max_age = %d, %v; want 0", n, err)
	}
	advance(45 * time.Minute)
	n, err := q.expire()
	if err != nil || n != 4 {
		t.Fatalf("expire = %d, %v; want 4 (5 old records, one already acked)", n, err)
	}
	st := q.Stats()
	if st.Dropped.Expired != 4 || st.Acked != 1 || st.Messages != 3 || st.Head != 5 {
		t.Errorf("stats = %+v", st)
	}
	if want := time.Date(2026, 1, 1, 0, 30, 0, 0, time.UTC); !st.OldestTime.Equal(want) {
		t.Errorf("OldestTime = %v, want %v", st.OldestTime, want)
	}
	if diff := cmp.Diff([]uint64{6, 7, 8}, seqsOf(readAll(t, q, 0))); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if err := q.Ack(3); err != nil { // expired: no-op
		t.Fatal(err)
	}
}

func TestNotify(t *testing.T) {
	q := openTest(t, t.TempDir(), testConfig())
	select {
	case <-q.Notify():
		t.Fatal("notified before any append")
	default:
	}
	appendN(t, q, 0, 3)
	select {
	case <-q.Notify():
	default:
		t.Fatal("no notification after append")
	}
	select {
	case <-q.Notify():
		t.Fatal("notifications not coalesced")
	default:
	}
}

func TestConcurrentAppends(t *testing.T) {
	q := openTest(t, t.TempDir(), testConfig())
	const writers, each = 16, 100
	var wg sync.WaitGroup
	results := make([][]uint64, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				s, err := q.Append(context.Background(), []byte(fmt.Sprintf("w%02d-%04d", w, i)))
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				results[w] = append(results[w], s)
			}
		})
	}
	// Readers and ackers run concurrently with the appenders.
	var after uint64
	stop := make(chan struct{})
	var rg sync.WaitGroup
	rg.Go(func() {
		for {
			recs, err := q.Read(after, 50, 0)
			if err != nil {
				t.Errorf("Read: %v", err)
				return
			}
			for i := 1; i < len(recs); i++ {
				if recs[i].Seq <= recs[i-1].Seq {
					t.Errorf("Read out of order: %d after %d", recs[i].Seq, recs[i-1].Seq)
				}
			}
			if len(recs) > 0 {
				after = recs[len(recs)-1].Seq
				if err := q.Ack(seqsOf(recs)...); err != nil {
					t.Errorf("Ack: %v", err)
				}
				continue
			}
			select {
			case <-stop:
				return
			case <-q.Notify():
			}
		}
	})
	wg.Wait()
	close(stop)
	rg.Wait()
	seen := map[uint64]bool{}
	for w, seqs := range results {
		for i, s := range seqs {
			if seen[s] {
				t.Fatalf("seq %d returned twice", s)
			}
			seen[s] = true
			if i > 0 && s <= seqs[i-1] {
				t.Errorf("writer %d: seq %d after %d", w, s, seqs[i-1])
			}
		}
	}
	st := q.Stats()
	if st.Appended != writers*each || len(seen) != writers*each || st.LastSeq != writers*each {
		t.Errorf("appended %d, distinct seqs %d, last seq %d; want %d", st.Appended, len(seen), st.LastSeq, writers*each)
	}
	if st.Syncs != st.BatchesCommitted || st.Syncs > st.Appended {
		t.Errorf("syncs %d batches %d appended %d", st.Syncs, st.BatchesCommitted, st.Appended)
	}
	t.Logf("%d appends in %d fsyncs (%.1f per fsync)", st.Appended, st.Syncs, float64(st.Appended)/float64(st.Syncs))
	// Drain the rest.
	for _, r := range readAll(t, q, 0) {
		if err := q.Ack(r.Seq); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if st := q.Stats(); st.Messages != 0 || st.Acked != writers*each {
		t.Errorf("after drain: messages %d acked %d", st.Messages, st.Acked)
	}
}

func TestAppendCancelled(t *testing.T) {
	q := openTest(t, t.TempDir(), testConfig())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := q.Append(ctx, []byte("x")); !errors.Is(err, context.Canceled) {
		t.Errorf("Append with a cancelled ctx = %v", err)
	}
	if st := q.Stats(); st.LastSeq != 0 || st.Messages != 0 {
		t.Errorf("cancelled append stored something: %+v", st)
	}
}

func TestClosed(t *testing.T) {
	q, err := Open(t.TempDir(), testConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, q, 0, 1)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if _, err := q.Append(context.Background(), []byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close = %v", err)
	}
	if _, err := q.Read(0, 1, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Read after Close = %v", err)
	}
	if err := q.Ack(1); !errors.Is(err, ErrClosed) {
		t.Errorf("Ack after Close = %v", err)
	}
	if err := q.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close = %v", err)
	}
	if st := q.Stats(); st.Appended != 1 {
		t.Errorf("Stats after Close = %+v", st)
	}
}

func TestRunLifecycle(t *testing.T) {
	cfg := testConfig()
	cfg.MaxAge = time.Hour
	q := openTest(t, t.TempDir(), cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- q.Run(ctx) }()
	appendN(t, q, 0, 3)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil after cancel", err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCollectReclaimsEmptyStore(t *testing.T) {
	q := openTest(t, t.TempDir(), testConfig())
	big := bytes.Repeat([]byte("y"), 2000)
	batch := make([][]byte, 100)
	for i := range batch {
		batch[i] = big
	}
	for range 100 { // 20 MB: more than two memtables, so tables get written
		if _, err := q.AppendBatch(context.Background(), batch); err != nil {
			t.Fatal(err)
		}
	}
	for {
		recs, err := q.Read(0, 1000, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			break
		}
		if err := q.Ack(seqsOf(recs)...); err != nil {
			t.Fatal(err)
		}
	}
	before := q.Stats().DiskBytes
	if err := q.collect(); err != nil {
		t.Fatal(err)
	}
	st := q.Stats()
	if st.Messages != 0 {
		t.Fatalf("stats = %+v", st)
	}
	if st.DiskBytes > before/4 {
		t.Errorf("disk usage %d -> %d bytes: space not returned after the drain", before, st.DiskBytes)
	}
	t.Logf("disk usage %d -> %d bytes", before, st.DiskBytes)
	// The store still works and keeps counting.
	s, err := q.Append(context.Background(), []byte("after"))
	if err != nil || s != 10001 {
		t.Fatalf("Append after reclaim = %d, %v", s, err)
	}
	if diff := cmp.Diff([]uint64{10001}, seqsOf(readAll(t, q, 0))); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestConfig(t *testing.T) {
	var c Config
	c.Defaults()
	want := Config{MaxBytes: 256 * MiB, MaxAge: 168 * time.Hour, WhenFull: DropOldest}
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("Defaults (-want +got):\n%s", diff)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("defaults invalid: %v", err)
	}
	bad := Config{MaxBytes: 10, MaxAge: -time.Second, WhenFull: "drop-newest"}
	err := bad.Validate()
	var paths []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("%v is not a *FieldError", e)
		}
		paths = append(paths, fe.FieldPath())
	}
	if diff := cmp.Diff([]string{"max_bytes", "max_age", "when_full"}, paths); diff != "" {
		t.Errorf("paths (-want +got):\n%s", diff)
	}
	if _, err := Open(t.TempDir(), bad, nil); err == nil {
		t.Error("Open accepted an invalid config")
	}
}

func TestSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Size
		bad  bool
	}{
		{in: "256MiB", want: 256 << 20},
		{in: "1GiB", want: 1 << 30},
		{in: "500MB", want: 500_000_000},
		{in: "1024", want: 1024},
		{in: "64 KiB", want: 64 << 10},
		{in: "1.5GiB", want: 3 << 29},
		{in: "10b", want: 10},
		{in: "2kb", want: 2000},
		{in: "", bad: true},
		{in: "MiB", bad: true},
		{in: "-1", bad: true},
		{in: "12 parsecs", bad: true},
		{in: "99999999999999999999", bad: true},
		{in: "9999999999TiB", bad: true},
	} {
		var s Size
		err := s.UnmarshalText([]byte(tc.in))
		if tc.bad {
			if err == nil {
				t.Errorf("%q: accepted as %d", tc.in, s)
			}
			continue
		}
		if err != nil || s != tc.want {
			t.Errorf("%q = %d, %v; want %d", tc.in, s, err, tc.want)
		}
		text, _ := s.MarshalText()
		var back Size
		if err := back.UnmarshalText(text); err != nil || back != s {
			t.Errorf("%q: MarshalText %q reads back as %d, %v", tc.in, text, back, err)
		}
	}
	if got := (256 * MiB).String(); got != "256MiB" {
		t.Errorf("String = %q", got)
	}
}

func TestCheckPlatform(t *testing.T) {
	if err := checkPlatform(4); !errors.Is(err, ErrUnsupportedPlatform) {
		t.Errorf("checkPlatform(4) = %v, want ErrUnsupportedPlatform", err)
	}
	if err := checkPlatform(8); err != nil {
		t.Errorf("checkPlatform(8) = %v", err)
	}
}

func TestOpenEnvironmentError(t *testing.T) {
	// A second Open of a locked store is an error, not a corruption: the
	// store must not be moved aside.
	dir := t.TempDir()
	q := openTest(t, dir, testConfig())
	appendN(t, q, 0, 1)
	if _, err := Open(dir, testConfig(), testLogger(t)); err == nil {
		t.Fatal("second Open of the same dir succeeded")
	}
	if m, _ := filepath.Glob(dir + ".corrupt-*"); len(m) != 0 {
		t.Fatalf("locked store was moved aside: %v", m)
	}
	if got := seqsOf(readAll(t, q, 0)); len(got) != 1 {
		t.Errorf("records after failed second Open: %v", got)
	}
}

// The buffer logs once when it passes 90% of its quota and once when it has
// drained below 80%, not on every maintenance tick.
func TestNearFullLoggedOnStateChange(t *testing.T) {
	cfg := testConfig()
	cfg.MaxBytes = minMaxBytes
	var logs syncLog
	q, err := Open(t.TempDir(), cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	rec := make([]byte, 1000)
	var seqs []uint64
	for q.Stats().Bytes < uint64(float64(cfg.MaxBytes)*0.92) {
		s, err := q.Append(context.Background(), rec)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, s)
	}
	q.logFill()
	q.logFill()
	if n := strings.Count(logs.String(), "buffer: near full"); n != 1 {
		t.Fatalf("near full logged %d times, want 1:\n%s", n, logs.String())
	}
	if err := q.Ack(seqs[:len(seqs)/2]...); err != nil {
		t.Fatal(err)
	}
	q.logFill()
	q.logFill()
	if n := strings.Count(logs.String(), "buffer: no longer near full"); n != 1 {
		t.Fatalf("drained logged %d times, want 1:\n%s", n, logs.String())
	}
}

type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestAppendBatchAsync: asynchronous appends take sequence numbers in the
// order they were queued, also when mixed with synchronous appends from
// other goroutines; their outcomes arrive through Pending; they survive a
// reopen; Close commits what was queued; validation errors come at once and
// a full queue reports ErrFull through Wait.
func TestAppendBatchAsync(t *testing.T) {
	dir := t.TempDir()
	q := openTest(t, dir, testConfig())

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 4 { // synchronous appenders competing for the same commits
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := q.Append(context.Background(), []byte(fmt.Sprintf("sync-%d-%d", g, i))); err != nil {
					t.Errorf("Append: %v", err)
					return
				}
			}
		})
	}
	const n = 3000
	pend := make([]*Pending, n)
	for i := range n {
		p, err := q.AppendBatchAsync([][]byte{payload(i)})
		if err != nil {
			t.Fatalf("AppendBatchAsync %d: %v", i, err)
		}
		pend[i] = p
	}
	var last uint64
	for i, p := range pend {
		seq, err := p.Wait()
		if err != nil {
			t.Fatalf("Wait %d: %v", i, err)
		}
		if seq <= last {
			t.Fatalf("record %d got seq %d after %d: order of queuing not kept", i, seq, last)
		}
		last = seq
		select {
		case <-p.Done():
		default:
			t.Fatal("Done not closed after Wait returned")
		}
	}
	close(stop)
	wg.Wait()

	// Queued but not waited for: Close commits them.
	var tail []*Pending
	for i := n; i < n+50; i++ {
		p, err := q.AppendBatchAsync([][]byte{payload(i)})
		if err != nil {
			t.Fatal(err)
		}
		tail = append(tail, p)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	for i, p := range tail {
		if _, err := p.Wait(); err != nil {
			t.Fatalf("tail %d: %v", i, err)
		}
	}
	if _, err := q.AppendBatchAsync([][]byte{[]byte("late")}); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v; want ErrClosed", err)
	}

	q = openTest(t, dir, testConfig())
	var got []string
	for _, r := range readAll(t, q, 0) {
		if !bytes.HasPrefix(r.Data, []byte("sync-")) {
			got = append(got, string(r.Data))
		}
	}
	var want []string
	for i := range n + 50 {
		want = append(want, string(payload(i)))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("asynchronous records after reopen (-want +got):\n%s", diff)
	}

	if _, err := q.AppendBatchAsync(nil); err == nil {
		t.Error("empty batch accepted")
	}
	if _, err := q.AppendBatchAsync([][]byte{make([]byte, maxRecordBytes+1)}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized record: %v; want ErrTooLarge", err)
	}

	cfg := testConfig()
	cfg.MaxBytes = 64 * KiB
	cfg.WhenFull = Reject
	full := openTest(t, t.TempDir(), cfg)
	rec := bytes.Repeat([]byte{'x'}, 1000)
	var errs []error
	for range 80 {
		p, err := full.AppendBatchAsync([][]byte{rec})
		if err != nil {
			t.Fatal(err)
		}
		_, err = p.Wait()
		errs = append(errs, err)
	}
	if !errors.Is(errs[len(errs)-1], ErrFull) || errs[0] != nil {
		t.Errorf("outcomes over a 64 KiB quota: first %v, last %v; want nil then ErrFull", errs[0], errs[len(errs)-1])
	}
}

// TestAckWatermark mixes in-order acks (which only move a watermark) with
// out-of-order ones (kept in a map) and checks that Read and the head see
// both.
func TestAckWatermark(t *testing.T) {
	q := openTest(t, t.TempDir(), testConfig())
	appendN(t, q, 0, 12)
	steps := []struct {
		acks     []uint64
		wantRead []uint64
		wantHead uint64
	}{
		{[]uint64{3, 4}, []uint64{1, 2, 5, 6, 7, 8, 9, 10, 11, 12}, 0},
		{[]uint64{1}, []uint64{2, 5, 6, 7, 8, 9, 10, 11, 12}, 1},
		{[]uint64{2}, []uint64{5, 6, 7, 8, 9, 10, 11, 12}, 4},  // absorbs 3 and 4
		{[]uint64{7, 5, 6}, []uint64{8, 9, 10, 11, 12}, 7},     // out of order within one call
		{[]uint64{1, 7, 13, 0}, []uint64{8, 9, 10, 11, 12}, 7}, // acked, removed, unknown: no-ops
		{[]uint64{8, 9, 10, 11, 12}, []uint64{}, 12},
	}
	for i, s := range steps {
		if err := q.Ack(s.acks...); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(s.wantRead, seqsOf(readAll(t, q, 0))); diff != "" {
			t.Errorf("step %d: read (-want +got):\n%s", i, diff)
		}
		if st := q.Stats(); st.Head != s.wantHead {
			t.Errorf("step %d: head %d, want %d", i, st.Head, s.wantHead)
		}
	}
	if st := q.Stats(); st.Messages != 0 || st.Bytes != 0 || st.Acked != 12 {
		t.Errorf("after acking all: %+v", st)
	}
}
