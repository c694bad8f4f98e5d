package buffer

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/google/go-cmp/cmp"
)

// fillStore writes small and large records (large ones go to the value
// log) and closes the store, so that it has a MANIFEST, an .sst and a .vlog.
func fillStore(t *testing.T, dir string) map[uint64][]byte {
	t.Helper()
	q, err := Open(dir, testConfig(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	var small, large [][]byte
	for i := range 200 {
		small = append(small, bytes.Repeat([]byte{byte(i)}, 100))
	}
	for i := range 20 {
		large = append(large, bytes.Repeat([]byte{byte(i)}, 10000))
	}
	want := map[uint64][]byte{}
	for _, b := range [][][]byte{small, large} {
		first, err := q.AppendBatch(context.Background(), b)
		if err != nil {
			t.Fatal(err)
		}
		for i, d := range b {
			want[first+uint64(i)] = d
		}
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	return want
}

func oneFile(t *testing.T, dir, pattern string) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil || len(m) == 0 {
		t.Fatalf("no %s in %s", pattern, dir)
	}
	return m[0]
}

func truncateFile(t *testing.T, path string, keep func(size int64) int64) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, keep(fi.Size())); err != nil {
		t.Fatal(err)
	}
}

func garbleFile(t *testing.T, path string, at func(size int64) int64, n int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	off := at(int64(len(b)))
	for i := off; i < off+int64(n) && i < int64(len(b)); i++ {
		b[i] ^= 0x5a
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestCorruptStoreQuarantined damages the store's files; Open must succeed.
// Damage to the MANIFEST or a table moves the store aside and starts a
// fresh one. Damage to the value log (which holds only records larger than
// valueThreshold) moves the store aside when it hits the first or last
// record; otherwise only the damaged records are dropped (counted as
// "corrupt", never returned garbled) and the intact ones are kept.
func TestCorruptStoreQuarantined(t *testing.T) {
	const mustQuarantine, mayDropRecords = false, true
	for _, tc := range []struct {
		name    string
		partial bool
		damage  func(t *testing.T, dir string)
	}{
		{"manifest truncated", mustQuarantine, func(t *testing.T, dir string) {
			truncateFile(t, filepath.Join(dir, "MANIFEST"), func(n int64) int64 { return 5 })
		}},
		{"manifest garbled", mustQuarantine, func(t *testing.T, dir string) {
			garbleFile(t, filepath.Join(dir, "MANIFEST"), func(int64) int64 { return 0 }, 8)
		}},
		{"manifest garbled change", mustQuarantine, func(t *testing.T, dir string) {
			garbleFile(t, filepath.Join(dir, "MANIFEST"), func(n int64) int64 { return n - 6 }, 4)
		}},
		{"sst truncated", mustQuarantine, func(t *testing.T, dir string) {
			truncateFile(t, oneFile(t, dir, "*.sst"), func(n int64) int64 { return n / 2 })
		}},
		{"sst index garbled", mustQuarantine, func(t *testing.T, dir string) {
			garbleFile(t, oneFile(t, dir, "*.sst"), func(n int64) int64 { return n - 100 }, 40)
		}},
		{"sst missing", mustQuarantine, func(t *testing.T, dir string) {
			if err := os.Remove(oneFile(t, dir, "*.sst")); err != nil {
				t.Fatal(err)
			}
		}},
		{"vlog tail garbled", mayDropRecords, func(t *testing.T, dir string) {
			garbleFile(t, oneFile(t, dir, "*.vlog"), func(n int64) int64 { return n - 100 }, 64)
		}},
		{"vlog truncated", mayDropRecords, func(t *testing.T, dir string) {
			truncateFile(t, oneFile(t, dir, "*.vlog"), func(n int64) int64 { return n / 2 })
		}},
		{"vlog garbled", mayDropRecords, func(t *testing.T, dir string) {
			garbleFile(t, oneFile(t, dir, "*.vlog"), func(n int64) int64 { return n / 2 }, 64)
		}},
		// What a power cut leaves of a value log whose values were
		// never synced (never acknowledged): the records pointing into it
		// are dropped at Open, counted as corrupt; the others are kept.
		{"vlog truncated to its header", mayDropRecords, func(t *testing.T, dir string) {
			truncateFile(t, oneFile(t, dir, "*.vlog"), func(n int64) int64 { return 20 })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "buffer")
			want := fillStore(t, dir)
			tc.damage(t, dir)
			var logs lockedBuffer
			q, err := Open(dir, testConfig(), slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			t.Cleanup(func() { _ = q.Close() })
			st := q.Stats()
			moved, _ := filepath.Glob(dir + ".corrupt-*")
			if st.Quarantined == 0 && tc.partial {
				recs := readAll(t, q, 0)
				for _, r := range recs {
					if !bytes.Equal(r.Data, want[r.Seq]) {
						t.Errorf("record %d returned garbled", r.Seq)
					}
				}
				st = q.Stats()
				if len(moved) != 0 || uint64(len(recs))+st.Dropped.Corrupt != uint64(len(want)) || st.Messages != uint64(len(recs)) {
					t.Errorf("%d records returned, stats %+v; want %d returned or dropped as corrupt", len(recs), st, len(want))
				}
				t.Logf("kept %d records, dropped %d as corrupt", len(recs), st.Dropped.Corrupt)
				return
			}
			if st.Quarantined != 1 || len(moved) != 1 {
				recs := readAll(t, q, 0)
				t.Fatalf("not quarantined: stats %+v, moved %v, %d records readable", st, moved, len(recs))
			}
			if st.Messages != 0 || st.LastSeq != 0 {
				t.Errorf("fresh store not empty: %+v", st)
			}
			if s, err := q.Append(context.Background(), []byte("x")); err != nil || s != 1 {
				t.Errorf("Append on the fresh store = %d, %v", s, err)
			}
			if _, err := os.Stat(filepath.Join(moved[0], "MANIFEST")); err != nil {
				t.Errorf("moved store incomplete: %v", err)
			}
			var lines []string
			for _, l := range strings.Split(logs.String(), "\n") {
				if strings.Contains(l, "moved it aside") {
					lines = append(lines, l)
				}
			}
			if len(lines) != 1 || !strings.Contains(lines[0], "level=ERROR") || !strings.Contains(lines[0], "reason=") ||
				!strings.Contains(lines[0], "moved_to="+moved[0]) {
				t.Errorf("want one error line with the reason and where the store went, got %q", logs.String())
			}
		})
	}
}

// TestMetadataRebuilt removes or damages the metadata key: Open rebuilds it
// with one scan and loses nothing.
func TestMetadataRebuilt(t *testing.T) {
	for _, tc := range []struct {
		name string
		do   func(txn *badger.Txn) error
	}{
		{"missing", func(txn *badger.Txn) error { return txn.Delete(metaKey) }},
		{"garbled", func(txn *badger.Txn) error { return txn.Set(metaKey, []byte("garbage")) }},
		{"behind the keys", func(txn *badger.Txn) error {
			return txn.Set(metaKey, encodeMeta(meta{lastSeq: 3, head: 0, count: 3, bytes: 3 * RecordOverhead}))
		}},
		{"sentinel left behind", func(txn *badger.Txn) error {
			if err := txn.Set(sentinelKey, nil); err != nil {
				return err
			}
			return txn.Delete(metaKey)
		}},
		{"counting nothing", func(txn *badger.Txn) error {
			return txn.Set(metaKey, encodeMeta(meta{lastSeq: 10, head: 10}))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			q, err := Open(dir, testConfig(), testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			appendN(t, q, 0, 10)
			if err := q.Ack(1, 2); err != nil {
				t.Fatal(err)
			}
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			db, err := badger.Open(badgerOptions(dir, testLogger(t)))
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(tc.do); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			q = openTest(t, dir, testConfig())
			st := q.Stats()
			want := Stats{Messages: 8, Bytes: 8 * uint64(len(payload(0))+RecordOverhead), LastSeq: 10, Head: 2, Rebuilt: 1}
			got := Stats{Messages: st.Messages, Bytes: st.Bytes, LastSeq: st.LastSeq, Head: st.Head, Rebuilt: st.Rebuilt}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("stats (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(seqRange(3, 10), seqsOf(readAll(t, q, 0))); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if s, err := q.Append(context.Background(), []byte("x")); err != nil || s != 11 {
				t.Errorf("Append = %d, %v; want 11", s, err)
			}
		})
	}
}

// TestCorruptRecordDropped stores a record whose checksum does not match:
// Read skips it and counts it.
func TestCorruptRecordDropped(t *testing.T) {
	dir := t.TempDir()
	q, err := Open(dir, testConfig(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, q, 0, 3)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := badger.Open(badgerOptions(dir, testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		v := encodeRecordValue(q.now(), payload(1))
		v[len(v)-1] ^= 1
		return txn.Set(recordKey(2, len(payload(1))), v)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	q = openTest(t, dir, testConfig())
	if diff := cmp.Diff([]uint64{1, 3}, seqsOf(readAll(t, q, 0))); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if st := q.Stats(); st.Dropped.Corrupt != 1 || st.Messages != 2 {
		t.Errorf("stats = %+v; want 1 corrupt drop, 2 messages", st)
	}
	if err := q.Ack(1, 3); err != nil {
		t.Fatal(err)
	}
	if st := q.Stats(); st.Messages != 0 || st.Bytes != 0 || st.Head != 3 {
		t.Errorf("stats after acking the rest = %+v", st)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
