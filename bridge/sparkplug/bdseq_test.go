package sparkplug

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func nextN(t *testing.T, s *BdSeqStore, n int) []uint64 {
	t.Helper()
	var got []uint64
	for range n {
		v, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, v)
	}
	return got
}

func TestBdSeqAdvancesAndSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sparkplug-bdseq")
	s, err := OpenBdSeqStore(path, discard())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]uint64{0, 1, 2}, nextN(t, s, 3)); diff != "" {
		t.Errorf("first connections (-want +got):\n%s", diff)
	}
	// A restart (or kill -9 right after Next) continues after the last
	// value handed out.
	s2, err := OpenBdSeqStore(path, discard())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]uint64{3, 4}, nextN(t, s2, 2)); diff != "" {
		t.Errorf("after restart (-want +got):\n%s", diff)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "4\n" {
		t.Errorf("file content %q, %v; want \"4\\n\"", b, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the bdSeq file (no temporary files left)", len(entries))
	}
}

func TestBdSeqWraps(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bdseq")
	if err := os.WriteFile(path, []byte("254\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := OpenBdSeqStore(path, discard())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]uint64{255, 0, 1}, nextN(t, s, 3)); diff != "" {
		t.Errorf("wrap (-want +got):\n%s", diff)
	}
}

func TestBdSeqCorruptFileRestartsAtZero(t *testing.T) {
	for _, content := range []string{"", "garbage", "256", "-1", "\x00\x00\x00"} {
		t.Run(content, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bdseq")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			var logBuf bytes.Buffer
			s, err := OpenBdSeqStore(path, slog.New(slog.NewTextHandler(&logBuf, nil)))
			if err != nil {
				t.Fatal(err)
			}
			if got := nextN(t, s, 1); got[0] != 0 {
				t.Errorf("first bdSeq after a corrupt file = %d, want 0", got[0])
			}
			if !strings.Contains(logBuf.String(), "bdSeq file unreadable") {
				t.Errorf("no warning logged: %q", logBuf.String())
			}
		})
	}
}

// A failed write returns an error and hands out the same value next time.
// (The directory is removed rather than made read-only: root, as in CI,
// ignores directory permissions.)
func TestBdSeqWriteFailure(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "gone")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "bdseq")
	s, err := OpenBdSeqStore(path, discard())
	if err != nil {
		t.Fatal(err)
	}
	nextN(t, s, 1)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Next(); err == nil || !strings.Contains(err.Error(), "persist bdSeq") {
		t.Fatalf("Next into a removed directory: %v, want a persist error", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if got := nextN(t, s, 1); got[0] != 1 {
		t.Errorf("bdSeq after a failed write = %d, want 1", got[0])
	}
}

func TestOpenBdSeqStoreReadError(t *testing.T) {
	// A directory where the file should be cannot be read.
	if _, err := OpenBdSeqStore(t.TempDir(), discard()); err == nil {
		t.Error("OpenBdSeqStore on a directory succeeded")
	}
}
