package buffer

import (
	"context"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"
)

// An I/O error while making records durable fails the store: the appends
// waiting for that sync and every later one fail with ErrStoreFailed (and
// the cause), and Run returns it. A full disk at sync time does not: the
// appends fail, the queue keeps working. What was durable before is still
// there after reopening.
func TestStoreFailure(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cause syscall.Errno
		fatal bool
	}{
		{"EIO", syscall.EIO, true},
		{"ENOSPC", syscall.ENOSPC, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var cfg Config
			cfg.Defaults()
			q := openTest(t, dir, cfg)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			runErr := make(chan error, 1)
			go func() { runErr <- q.Run(ctx) }()
			appendN(t, q, 0, 3)

			var fault error = &os.PathError{Op: "fdatasync", Path: dir, Err: tc.cause}
			q.syncFault = func(string) error { return fault }
			_, err := q.Append(t.Context(), []byte("lost"))
			if !errors.Is(err, tc.cause) || errors.Is(err, ErrStoreFailed) != tc.fatal {
				t.Fatalf("Append during the fault = %v, want %v (store failed: %v)", err, tc.cause, tc.fatal)
			}
			fault = nil // the device answers again: a failed store stays failed
			_, err = q.Append(t.Context(), []byte("after"))
			if tc.fatal && !errors.Is(err, ErrStoreFailed) {
				t.Fatalf("Append after the failure = %v, want ErrStoreFailed", err)
			}
			if !tc.fatal && err != nil {
				t.Fatalf("Append after a full disk at sync = %v, want nil", err)
			}
			if tc.fatal {
				select {
				case err := <-runErr:
					if !errors.Is(err, ErrStoreFailed) || !errors.Is(err, syscall.EIO) {
						t.Fatalf("Run = %v, want ErrStoreFailed wrapping EIO", err)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("Run did not return after the store failed")
				}
			} else {
				select {
				case err := <-runErr:
					t.Fatalf("Run returned %v after a non-fatal sync error", err)
				default:
				}
			}
			cancel()
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			q = openTest(t, dir, cfg)
			if got := len(readAll(t, q, 0)); got < 3 {
				t.Errorf("after reopening: %d records, want at least the 3 durable ones", got)
			}
		})
	}
}
