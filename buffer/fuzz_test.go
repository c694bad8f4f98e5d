package buffer

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzDecodeRecord feeds arbitrary keys and values to the record decoder:
// it must never panic, must reject anything that is not a well-formed
// record, and what it accepts must re-encode to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, d := range [][]byte{nil, []byte("hello"), bytes.Repeat([]byte{0xff}, 300)} {
		f.Add(recordKey(42, len(d)), encodeRecordValue(t0, d))
	}
	f.Add(recordKey(1, 3), []byte{recordVersion, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 'a', 'b', 'c'})
	f.Add([]byte{recordPrefix}, []byte{})
	f.Add(metaKey, encodeMeta(meta{lastSeq: 1}))
	f.Fuzz(func(t *testing.T, k, v []byte) {
		rec, err := decodeRecord(k, v)
		if err != nil {
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("error %v does not wrap errCorrupt", err)
			}
			return
		}
		if got := recordKey(rec.Seq, len(rec.Data)); !bytes.Equal(got, k) {
			t.Fatalf("key %x re-encodes as %x", k, got)
		}
		if got := encodeRecordValue(rec.Time, rec.Data); !bytes.Equal(got, v) {
			t.Fatalf("value %x re-encodes as %x", v, got)
		}
		if _, ok := recordTime(v); !ok {
			t.Fatal("recordTime rejects a valid record")
		}
	})
}

// FuzzDecodeMeta: the metadata decoder rejects damaged values and accepts
// only self-consistent totals.
func FuzzDecodeMeta(f *testing.F) {
	f.Add(encodeMeta(meta{}))
	f.Add(encodeMeta(meta{lastSeq: 10, head: 2, count: 8, bytes: 8 * 100}))
	f.Add(encodeMeta(meta{lastSeq: 1<<64 - 1, head: 0, count: 1<<64 - 1, bytes: 1<<64 - 1}))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, v []byte) {
		m, err := decodeMeta(v)
		if err != nil {
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("error %v does not wrap errCorrupt", err)
			}
			return
		}
		if m.head > m.lastSeq || m.count > m.lastSeq-m.head {
			t.Fatalf("accepted inconsistent %+v", m)
		}
		if got := encodeMeta(m); !bytes.Equal(got, v) {
			t.Fatalf("%x re-encodes as %x", v, got)
		}
	})
}

// FuzzCheckTable: the table footer check reads attacker-controlled
// lengths; it must return an error, never panic or over-allocate.
func FuzzCheckTable(f *testing.F) {
	seed, err := os.ReadFile(filepath.Join("testdata", "000001.sst"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add(seed[:len(seed)/2])
	f.Add([]byte{0, 0, 0, 4})
	f.Add([]byte{})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, "x.sst")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		_ = checkTable(p)
	})
}

func TestCheckTableSeed(t *testing.T) {
	if err := checkTable(filepath.Join("testdata", "000001.sst")); err != nil {
		t.Fatalf("intact table rejected: %v", err)
	}
	b, _ := os.ReadFile(filepath.Join("testdata", "000001.sst"))
	p := filepath.Join(t.TempDir(), "1.sst")
	if err := os.WriteFile(p, b[:len(b)-3], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := checkTable(p); err == nil {
		t.Fatal("truncated table accepted")
	}
}

func TestParseSizeFuzzSeeds(t *testing.T) {
	// Sizes that String prints are read back unchanged.
	for _, s := range []Size{0, 1, 1023, KiB, 1536, MiB, 256 * MiB, GiB, 1 << 40, 1<<63 - 1} {
		got, err := ParseSize(s.String())
		if err != nil || got != s {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", s.String(), got, err, s)
		}
	}
}
