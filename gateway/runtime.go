package gateway

import "runtime/debug"

// gcPercent is the garbage collector's target (GOGC) while a memory limit is
// in effect. With Go's default of 100 the collector took 10 % of the CPU,
// with 4 % more in assists, under a broker load of 4 QoS 1 publishers to one
// subscriber (pprof; mochi builds fresh subscriber maps for every publish).
// At 400, measured with fieldgate-bench (two runs each,
// 100k–200k messages): qos1-4x1 58–60k → 74–75k msgs/s, qos2-1x10 82–86k →
// 120–122k, durable ingest 38.8–39.0k → 41.2–43.1k; the peak RSS under
// those loads went from 22–33 MB to 35–74 MB, the idle RSS stayed at 15 MB
// and the RSS with a 1M backlog at 92–95 MB, where the memory limit
// governs the collector anyway. The memory limit keeps the heap bounded
// whatever the target.
const gcPercent = 400

// tuneRuntime sets the Go runtime's soft memory limit to limit bytes (0:
// leave the runtime's default) unless GOMEMLIMIT is set, and, when a memory
// limit is in effect (either way) and GOGC is not set, the collector's target
// to gcPercent. It returns the limit and target in effect.
func tuneRuntime(limit int64, getenv func(string) string) (memLimit int64, gc int) {
	if limit > 0 && getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(limit)
	}
	memLimit = debug.SetMemoryLimit(-1)
	gc = debug.SetGCPercent(gcPercent)
	if (limit > 0 || getenv("GOMEMLIMIT") != "") && getenv("GOGC") == "" {
		gc = gcPercent
	} else {
		debug.SetGCPercent(gc) // leave it as it was
	}
	return memLimit, gc
}
