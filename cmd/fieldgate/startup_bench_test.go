package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkStartup measures exec → first accepted MQTT connection (goal
// ≤ 50 ms) and the resident memory of the idle gateway 2 s later (goal
// ≤ 20 MB), without and with a bridge (the buffer open, upstream absent).
//
//	go test ./cmd/fieldgate -run '^$' -bench Startup -benchtime 5x
func BenchmarkStartup(b *testing.B) {
	for _, withBridge := range []bool{false, true} {
		name := "broker"
		if withBridge {
			name = "broker+bridge"
		}
		b.Run(name, func(b *testing.B) {
			var rss float64
			var total time.Duration
			for range b.N {
				d, r := startOnce(b, withBridge)
				total += d
				rss = max(rss, r)
			}
			b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/start")
			b.ReportMetric(rss, "MB-idle-RSS")
		})
	}
}

func startOnce(b *testing.B, withBridge bool) (time.Duration, float64) {
	b.StopTimer()
	dir := b.TempDir()
	port, httpPort := freePort(b), freePort(b)
	cfg := fmt.Sprintf("gateway: {id: bench, data_dir: %s, http: {address: 127.0.0.1:%d}}\nbroker: {listeners: [{type: tcp, address: 127.0.0.1:%d}], auth: {anonymous: true}}\n",
		filepath.Join(dir, "data"), httpPort, port)
	if withBridge {
		cfg += fmt.Sprintf("bridge: {upstream: {url: mqtt://127.0.0.1:%d}, forward: [{filter: '#'}]}\n", freePort(b))
	}
	path := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	b.StartTimer()
	t0 := time.Now()
	cmd := exec.Command(binPath, "run", "--config", path)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			break
		}
		if time.Since(t0) > 10*time.Second {
			b.Fatal("gateway did not accept connections within 10s")
		}
		time.Sleep(200 * time.Microsecond)
	}
	d := time.Since(t0)
	b.StopTimer()
	time.Sleep(2 * time.Second)
	return d, rssMB(b, cmd.Process.Pid)
}

// rssMB reads VmRSS of pid in MB.
func rssMB(b *testing.B, pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return float64(kb) / 1024
		}
	}
	b.Fatal("no VmRSS")
	return 0
}
