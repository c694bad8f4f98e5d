package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A storm of SIGHUPs around SIGTERM (issue 15): every time, the gateway
// exits 0 within gateway.shutdown_timeout, no stop stage times out, and no
// device set started by a reload outlives the stop. Every reload changes
// the device map, so each one replaces the running device set.
func TestSIGHUPStormDuringStop(t *testing.T) {
	devices := func(name string) string {
		return fmt.Sprintf(`devices:
  - name: %s
    driver: sim
    poll: 10ms
    points: [{name: n, sim: counter}]
`, name)
	}
	header := strings.Replace(anonHeader, "  http:", "  shutdown_timeout: 3s\n  http:", 1)
	reloaded := 0
	for round := range 12 {
		dir := t.TempDir()
		g := startGW(t, dir, header+devices("a"))
		for i := range 4 + round%4 {
			// Replaced whole (rename), so that a reload never reads half a file.
			tmp := t.TempDir()
			if err := os.Rename(writeConfig(t, tmp, strings.ReplaceAll(header, "{{data}}", filepath.Join(dir, "data"))+devices(fmt.Sprintf("d%d", i)), g.mqttPort, g.httpPort), g.config); err != nil {
				t.Fatal(err)
			}
			_ = g.cmd.Process.Signal(syscall.SIGHUP)
			if i%2 == 1 {
				time.Sleep(time.Duration(round) * time.Millisecond)
			}
		}
		start := time.Now()
		_ = g.cmd.Process.Signal(syscall.SIGTERM)
		// `systemctl reload` while it stops, until it is gone: a SIGHUP
		// must never kill it (SIGHUP's default action) nor restart devices.
		hups := time.NewTicker(time.Millisecond)
	wait:
		for {
			select {
			case <-g.done:
				break wait
			case <-hups.C:
				_ = g.cmd.Process.Signal(syscall.SIGHUP)
			case <-time.After(3*time.Second + 5*time.Second):
				t.Fatalf("round %d: still running %s after SIGTERM (shutdown_timeout 3s):\n%s", round, time.Since(start), g.log.String())
			}
		}
		hups.Stop()
		if g.exitCode != 0 {
			t.Fatalf("round %d: exit code %d after SIGTERM:\n%s", round, g.exitCode, g.log.String())
		}
		log := g.log.String()
		if strings.Contains(log, "shutdown timeout") || strings.Contains(log, "need a restart") || !strings.Contains(log, "fieldgate stopped") {
			t.Fatalf("round %d: an unclean stop:\n%s", round, log)
		}
		// On a loaded machine the stop may win every race in a round; the
		// storm must still have raced real reloads against stops somewhere.
		if strings.Contains(log, "configuration reloaded") {
			reloaded++
		}
		if err := g.cmd.Process.Signal(syscall.Signal(0)); err == nil || !strings.Contains(err.Error(), "process already finished") {
			t.Fatalf("round %d: process still there after exit: %v", round, err)
		}
		_ = os.RemoveAll(dir)
	}
	if reloaded == 0 {
		t.Fatal("no round reloaded before its stop: the storm raced nothing")
	}
}
