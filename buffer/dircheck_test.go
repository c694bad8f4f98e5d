package buffer

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

type lockedLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A data directory that becomes read-only refuses appends like a full disk
// (ErrUnwritable, logged once), keeps what was stored, and accepts again
// once it is writable.
func TestAppendRefusedWhileDirUnwritable(t *testing.T) {
	var logs lockedLog
	q, err := Open(t.TempDir(), testConfig(), slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close() })
	if _, err := q.Append(t.Context(), []byte("before")); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	problem := error(syscall.EROFS)
	q.checkDirFn = func() error { mu.Lock(); defer mu.Unlock(); return problem }
	for range 20 {
		if _, err := q.Append(t.Context(), []byte("refused")); !errors.Is(err, ErrUnwritable) {
			t.Fatalf("append to a read-only directory: %v, want ErrUnwritable", err)
		}
	}
	if q.Unwritable() == nil {
		t.Error("Unwritable reports nothing while appends are refused")
	}
	if n := strings.Count(logs.String(), "data directory cannot be written"); n != 1 {
		t.Errorf("logged %d times, want once:\n%s", n, logs.String())
	}
	mu.Lock()
	problem = nil
	mu.Unlock()
	if _, err := q.Append(t.Context(), []byte("after")); err != nil {
		t.Fatalf("append once writable again: %v", err)
	}
	if q.Unwritable() != nil || !strings.Contains(logs.String(), "writable again") {
		t.Errorf("recovery not reported:\n%s", logs.String())
	}
	recs, err := q.Read(0, 10, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		got = append(got, string(r.Data))
	}
	if strings.Join(got, ",") != "before,after" {
		t.Errorf("records %v, want before,after", got)
	}
}

// Free space hovering around DiskReserve does not flap: once appends are
// refused they resume only with DiskReserve+diskHysteresis free, and the
// refusal is logged once.
func TestDiskFullHysteresis(t *testing.T) {
	var logs lockedLog
	q, err := Open(t.TempDir(), testConfig(), slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close() })
	var mu sync.Mutex
	free := uint64(DiskReserve + 1<<30)
	q.freeSpaceFn = func(string) (uint64, error) { mu.Lock(); defer mu.Unlock(); return free, nil }
	set := func(v uint64) {
		mu.Lock()
		free = v
		mu.Unlock()
		time.Sleep(2 * freeCheckInterval) // past the statfs cache
	}
	appendErr := func() error { _, err := q.Append(t.Context(), []byte("x")); return err }
	if err := appendErr(); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		set(DiskReserve - 1)
		if err := appendErr(); !errors.Is(err, ErrDiskFull) {
			t.Fatalf("below the reserve: %v, want ErrDiskFull", err)
		}
		set(DiskReserve + 1)
		if err := appendErr(); !errors.Is(err, ErrDiskFull) {
			t.Fatalf("just above the reserve after being full: %v, want ErrDiskFull (hysteresis)", err)
		}
	}
	set(DiskReserve + diskHysteresis + 1)
	if err := appendErr(); err != nil {
		t.Fatalf("with the reserve and the hysteresis free: %v", err)
	}
	if n := strings.Count(logs.String(), "disk full"); n != 1 {
		t.Errorf("disk full logged %d times, want once:\n%s", n, logs.String())
	}
}
