package gateway

import (
	"math"
	"runtime/debug"
	"testing"
)

// TestTuneRuntime: with a memory limit the collector's target is raised to
// gcPercent; without one, or with GOGC set, it is left alone; GOMEMLIMIT
// wins over the configured limit.
func TestTuneRuntime(t *testing.T) {
	oldLimit := debug.SetMemoryLimit(-1)
	oldGC := debug.SetGCPercent(100)
	t.Cleanup(func() {
		debug.SetMemoryLimit(oldLimit)
		debug.SetGCPercent(oldGC)
	})
	env := func(vars map[string]string) func(string) string {
		return func(k string) string { return vars[k] }
	}
	reset := func() {
		debug.SetMemoryLimit(math.MaxInt64)
		debug.SetGCPercent(100)
	}
	for _, tc := range []struct {
		name    string
		limit   int64
		env     map[string]string
		wantMem int64
		wantGC  int
	}{
		{"configured limit", 80 << 20, nil, 80 << 20, gcPercent},
		{"no limit", 0, nil, math.MaxInt64, 100},
		{"GOGC set", 80 << 20, map[string]string{"GOGC": "150"}, 80 << 20, 100},
		{"GOMEMLIMIT set", 80 << 20, map[string]string{"GOMEMLIMIT": "200MiB"}, math.MaxInt64, gcPercent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reset()
			mem, gc := tuneRuntime(tc.limit, env(tc.env))
			if mem != tc.wantMem || gc != tc.wantGC {
				t.Errorf("tuneRuntime = %d, %d; want %d, %d", mem, gc, tc.wantMem, tc.wantGC)
			}
			if got := debug.SetMemoryLimit(-1); got != tc.wantMem {
				t.Errorf("runtime memory limit %d, want %d", got, tc.wantMem)
			}
			if got := debug.SetGCPercent(100); got != tc.wantGC {
				t.Errorf("runtime GC percent %d, want %d", got, tc.wantGC)
			}
		})
	}
}
