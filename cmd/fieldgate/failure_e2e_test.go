package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var faultBin struct {
	once sync.Once
	path string
	err  error
}

// faultBinary builds fieldgate with the fieldgate_faults tag: its buffer's
// syncs fail with EIO while <data_dir>/buffer.inject-eio exists.
func faultBinary(t testing.TB) string {
	t.Helper()
	faultBin.once.Do(func() {
		faultBin.path = filepath.Join(filepath.Dir(binPath), "fieldgate-faults")
		out, err := exec.Command("go", "build", "-tags", "fieldgate_faults", "-o", faultBin.path, ".").CombinedOutput()
		if err != nil {
			faultBin.err = fmt.Errorf("build with -tags fieldgate_faults: %v\n%s", err, out)
		}
	})
	if faultBin.err != nil {
		t.Fatal(faultBin.err)
	}
	return faultBin.path
}

// notifySocket is a systemd notify socket: it collects the datagrams
// (READY=1, WATCHDOG=1, STOPPING=1) in order.
type notifySocket struct {
	path string
	mu   sync.Mutex
	msgs []string
}

func newNotifySocket(t testing.TB) *notifySocket {
	t.Helper()
	n := &notifySocket{path: filepath.Join(t.TempDir(), "notify")}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, strings.TrimSpace(string(buf[:k])))
			n.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return n
}

func (n *notifySocket) snapshot() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.msgs...)
}

// A buffer that fails while the gateway runs (an I/O error on fsync,
// injected) is reported and acted on (issue 15): one log line naming the
// component and the cause, the watchdog no longer fed, STOPPING=1, and
// exit code 4 so that systemd's Restart=on-failure restarts the gateway.
func TestComponentFailureExits(t *testing.T) {
	need(t, "mosquitto_pub")
	bin := faultBinary(t)
	notify := newNotifySocket(t)
	dir := t.TempDir()
	g := &gw{t: t, dir: dir, mqttPort: freePort(t), httpPort: freePort(t), bin: bin,
		env: []string{"NOTIFY_SOCKET=" + notify.path, "WATCHDOG_USEC=300000"}}
	// The upstream is not there: messages stay in the buffer.
	g.config = writeConfig(t, dir, bridgeConfig(freePort(t), ""), g.mqttPort, g.httpPort)
	g.start()
	eventually(t, 10*time.Second, "watchdog pings", func() bool {
		return strings.Contains(strings.Join(notify.snapshot(), "\n"), "WATCHDOG=1")
	})
	if out, err := mosqPub("-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-q", "1", "-t", "myhome/before", "-m", "1"); err != nil {
		t.Fatalf("publish before the fault: %v: %s", err, out)
	}

	if err := os.WriteFile(filepath.Join(dir, "data", "buffer.inject-eio"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// This publish's fsync fails: the publisher is not acknowledged.
	_, _ = mosqPub("-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-q", "1", "-t", "myhome/after", "-m", "2")
	select {
	case <-g.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("fieldgate still running 30s after its buffer failed:\n%s", g.log.String())
	}
	if g.exitCode != 4 {
		t.Errorf("exit code %d, want 4 (a component failed)", g.exitCode)
	}
	log := g.log.String()
	var failures []string
	for l := range strings.Lines(log) {
		if strings.Contains(l, "failed") && strings.Contains(l, "level=ERROR") {
			failures = append(failures, l)
		}
	}
	if len(failures) != 1 || !strings.Contains(failures[0], `msg="component failed; stopping" component=buffer`) ||
		!strings.Contains(failures[0], "input/output error") {
		t.Errorf("want one error line naming the buffer and the I/O error, got %d:\n%s", len(failures), strings.Join(failures, ""))
	}
	msgs := notify.snapshot()
	stopping := -1
	for i, m := range msgs {
		if m == "STOPPING=1" {
			stopping = i
		}
	}
	if stopping < 0 {
		t.Fatalf("no STOPPING=1 sent to systemd: %q", msgs)
	}
	for _, m := range msgs[stopping:] {
		if m == "WATCHDOG=1" {
			t.Errorf("watchdog fed after the failure: %q", msgs)
		}
	}
}
