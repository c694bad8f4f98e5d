package buffer

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// TestTrimMappings: unmapping badger's pages finds its mappings, takes
// their pages out of the RSS and loses nothing, neither written records
// (also those not yet written back) nor the ability to append.
func TestTrimMappings(t *testing.T) {
	dir := t.TempDir()
	q := openTest(t, dir, testConfig())
	appendN(t, q, 0, 100)
	before, _ := fileRSS()
	if n := trimMappings(dir); n <= 0 {
		t.Fatalf("trimMappings advised %d bytes; want badger's mmap'd files", n)
	}
	if after, _ := fileRSS(); after >= before {
		t.Errorf("file pages in the RSS: %d before trimming, %d after; want fewer", before, after)
	}
	appendN(t, q, 100, 10)
	recs := readAll(t, q, 0)
	if diff := cmp.Diff(seqRange(1, 110), seqsOf(recs)); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	for i, r := range recs {
		if string(r.Data) != string(payload(i)) {
			t.Fatalf("record %d = %q after trimming", r.Seq, r.Data)
		}
	}
	if trimMappings(t.TempDir()) != 0 {
		t.Error("trimmed mappings of another directory")
	}
}

// fileRSS reads the file-backed part of the RSS, whose growth makes Run
// trim: a test binary has its own text mapped, so it is never zero. It
// keeps /proc/self/statm open, so every call must read the current value:
// mapping and touching 8 MiB of a file shows up in the next call.
func TestFileRSS(t *testing.T) {
	n, ok := fileRSS()
	if !ok || n <= 0 {
		t.Fatalf("fileRSS() = %d, %v; want a positive size", n, ok)
	}
	const size = 8 << 20
	path := filepath.Join(t.TempDir(), "pages")
	if err := os.WriteFile(path, make([]byte, size), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	var sum byte
	for i := 0; i < size; i += os.Getpagesize() {
		sum += m[i]
	}
	after, ok := fileRSS()
	if !ok || after < n+size*3/4 {
		t.Fatalf("fileRSS() = %d after touching %d mapped bytes, was %d (sum %d)", after, size, n, sum)
	}
}

// BenchmarkFileRSS measures the read Run makes every trimInterval.
func BenchmarkFileRSS(b *testing.B) {
	for b.Loop() {
		if _, ok := fileRSS(); !ok {
			b.Fatal("fileRSS failed")
		}
	}
}
