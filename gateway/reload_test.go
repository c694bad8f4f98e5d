package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Reloads racing the stop never leave a device set running: Run stops the
// set a concurrent reload started, and reloads after the stop change
// nothing (issue 15). Each round runs a gateway, reloads it in a loop
// (the device map changes every time, so every reload swaps the set) and
// cancels it while reloads are under way; once Run returned, no goroutine
// of the gateway may be left.
func TestReloadRacingStop(t *testing.T) {
	dir := t.TempDir()
	conf := func(name string, poll time.Duration) string {
		path := filepath.Join(dir, name+".yaml")
		body := fmt.Sprintf(`gateway:
  id: gw
  data_dir: %s
  http: {address: "off"}
broker:
  listeners: [{type: tcp, address: "127.0.0.1:0"}]
devices:
  - name: %s
    driver: sim
    poll: %s
    points: [{name: n, sim: counter}]
`, filepath.Join(dir, "data"), name, poll)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	paths := []string{conf("a", 5*time.Millisecond), conf("b", 7*time.Millisecond)}
	log := slog.New(slog.DiscardHandler)
	drivers := Drivers(log)
	for round := range 30 {
		before := goleak.IgnoreCurrent() // the goroutines that are not this round's
		cfg, err := Load(paths[0], drivers)
		if err != nil {
			t.Fatal(err)
		}
		g, err := New(cfg, drivers, log)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		runErr := make(chan error, 1)
		go func() { runErr <- g.Run(ctx) }()
		deadline := time.Now().Add(10 * time.Second)
		for !g.Ready() {
			if time.Now().After(deadline) {
				t.Fatal("gateway not ready after 10s")
			}
			time.Sleep(time.Millisecond)
		}
		var reloaders sync.WaitGroup
		stopReloads := make(chan struct{})
		for r := range 2 {
			reloaders.Go(func() {
				for i := r; ; i++ {
					select {
					case <-stopReloads:
						return
					default:
					}
					_ = g.Reload(paths[i%2]) // refused once the gateway stops
				}
			})
		}
		time.Sleep(time.Duration(round%5) * time.Millisecond)
		cancel()
		select {
		case err := <-runErr:
			if err != nil {
				t.Fatalf("round %d: Run = %v", round, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: Run did not return", round)
		}
		close(stopReloads)
		reloaders.Wait()
		if err := goleak.Find(
			before,
			goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
			goleak.IgnoreTopFunction("github.com/dgraph-io/ristretto/v2/z.(*AllocatorPool).freeupAllocators"),
		); err != nil {
			t.Fatalf("round %d: goroutines left after Run returned: %v", round, err)
		}
	}
}
