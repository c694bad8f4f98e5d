package main

// End-to-end tests drive the built binary with real peers: Debian's
// mosquitto (upstream broker and mosquitto_pub/sub clients), python3-paho-mqtt,
// pymodbus and socat. A missing peer fails the test: .ci/run installs them.

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fieldgate-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "fieldgate")
	build := exec.Command("go", "build", "-o", binPath, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build fieldgate:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// need fails the test when a peer program is missing.
func need(t testing.TB, progs ...string) {
	t.Helper()
	for _, p := range progs {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("peer %s is not installed (bash .ci/run installs it): %v", p, err)
		}
	}
}

const python = "/usr/bin/python3"

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// eventually polls cond until it is true or the deadline passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// anonHeader is the gateway and broker sections of most e2e configs: one
// anonymous TCP listener.
const anonHeader = `gateway:
  id: e2e
  data_dir: {{data}}
  http: {address: 127.0.0.1:{{http}}}
broker:
  listeners:
    - {type: tcp, address: 127.0.0.1:{{mqtt}}}
  auth: {anonymous: true}
`

// gw is a running fieldgate process.
type gw struct {
	t        testing.TB
	cmd      *exec.Cmd
	dir      string
	config   string
	mqttPort int
	httpPort int
	log      *syncBuffer
	done     chan struct{}
	exitCode int
	bin      string   // the binary; binPath when empty
	env      []string // added to the environment
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// gwConfig renders a config. {{mqtt}}, {{http}}, {{data}} and {{dir}} are
// replaced with the listener port, the ops port, the data directory and the
// test directory.
func writeConfig(t testing.TB, dir, body string, mqttPort, httpPort int) string {
	t.Helper()
	r := strings.NewReplacer(
		"{{mqtt}}", fmt.Sprint(mqttPort),
		"{{http}}", fmt.Sprint(httpPort),
		"{{data}}", filepath.Join(dir, "data"),
		"{{dir}}", dir,
	)
	path := filepath.Join(dir, "fieldgate.yaml")
	if err := os.WriteFile(path, []byte(r.Replace(body)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startGW starts the binary on config body in dir and waits for /readyz.
func startGW(t testing.TB, dir, body string) *gw {
	t.Helper()
	g := &gw{t: t, dir: dir, mqttPort: freePort(t), httpPort: freePort(t)}
	g.config = writeConfig(t, dir, body, g.mqttPort, g.httpPort)
	g.start()
	return g
}

func (g *gw) start() {
	g.t.Helper()
	g.log = &syncBuffer{}
	g.done = make(chan struct{})
	g.cmd = exec.Command(cmp.Or(g.bin, binPath), "run", "--config", g.config)
	g.cmd.Stdout, g.cmd.Stderr = g.log, g.log
	if g.env != nil {
		g.cmd.Env = append(os.Environ(), g.env...)
	}
	if err := g.cmd.Start(); err != nil {
		g.t.Fatal(err)
	}
	go func() {
		_ = g.cmd.Wait()
		g.exitCode = g.cmd.ProcessState.ExitCode()
		close(g.done)
	}()
	g.t.Cleanup(func() {
		select {
		case <-g.done:
		default:
			_ = g.cmd.Process.Kill()
			<-g.done
		}
		if g.t.Failed() {
			g.t.Logf("fieldgate log:\n%s", g.log.String())
		}
	})
	url := fmt.Sprintf("http://127.0.0.1:%d/readyz", g.httpPort)
	eventually(g.t, 20*time.Second, "fieldgate /readyz", func() bool {
		select {
		case <-g.done:
			g.t.Fatalf("fieldgate exited with %d before ready:\n%s", g.exitCode, g.log.String())
		default:
		}
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// stop sends SIGTERM and waits for a clean exit.
func (g *gw) stop() {
	g.t.Helper()
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.done:
	case <-time.After(30 * time.Second):
		g.t.Fatalf("fieldgate did not stop within 30s after SIGTERM:\n%s", g.log.String())
	}
	if g.exitCode != 0 {
		g.t.Fatalf("fieldgate exited %d after SIGTERM:\n%s", g.exitCode, g.log.String())
	}
}

// kill9 kills the process without warning.
func (g *gw) kill9() {
	_ = g.cmd.Process.Kill()
	<-g.done
}

func (g *gw) metrics(t testing.TB) string {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", g.httpPort))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// mosquitto is a Debian mosquitto broker process.
type mosquitto struct {
	port int
	cmd  *exec.Cmd
	conf string
	done chan struct{}
	log  *syncBuffer
}

// startMosquitto runs mosquitto on port (0 = a free one) with extra config lines.
func startMosquitto(t testing.TB, port int, extra ...string) *mosquitto {
	t.Helper()
	need(t, "/usr/sbin/mosquitto")
	if port == 0 {
		port = freePort(t)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	body := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nmax_inflight_messages 0\n%s\n", port, strings.Join(extra, "\n"))
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	m := &mosquitto{port: port, conf: conf}
	m.start(t)
	t.Cleanup(m.stop)
	return m
}

func (m *mosquitto) start(t testing.TB) {
	t.Helper()
	m.log = &syncBuffer{}
	m.done = make(chan struct{})
	m.cmd = exec.Command("/usr/sbin/mosquitto", "-c", m.conf)
	m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = m.cmd.Wait(); close(m.done) }()
	eventually(t, 10*time.Second, "mosquitto listening", func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", m.port))
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

func (m *mosquitto) stop() {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	select {
	case <-m.done:
		return
	default:
	}
	_ = m.cmd.Process.Kill()
	<-m.done
}

// sub is a running mosquitto_sub collecting "topic payload" lines.
type sub struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	done  chan struct{}
	errb  *syncBuffer
}

// startSub runs mosquitto_sub -v with args and collects its lines.
func startSub(t testing.TB, args ...string) *sub {
	t.Helper()
	need(t, "mosquitto_sub")
	s := &sub{done: make(chan struct{}), errb: &syncBuffer{}}
	s.cmd = exec.Command("mosquitto_sub", append([]string{"-v"}, args...)...)
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stderr = s.errb
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			s.mu.Lock()
			s.lines = append(s.lines, sc.Text())
			s.mu.Unlock()
		}
		_ = s.cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		<-s.done
	})
	return s
}

func (s *sub) snapshot() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lines...)
}

func (s *sub) has(line string) bool {
	for _, l := range s.snapshot() {
		if l == line {
			return true
		}
	}
	return false
}

// waitSubscribed gives mosquitto_sub time to subscribe: it publishes probe
// messages on topic until one arrives.
func waitSubscribed(t testing.TB, s *sub, pub func(topic, payload string), topic string) {
	t.Helper()
	i := 0
	eventually(t, 10*time.Second, "mosquitto_sub subscribed", func() bool {
		i++
		pub(topic, fmt.Sprintf("probe-%d", i))
		time.Sleep(50 * time.Millisecond)
		for _, l := range s.snapshot() {
			if strings.HasPrefix(l, topic+" probe-") {
				return true
			}
		}
		return false
	})
}

// mosqPub runs mosquitto_pub and returns its combined output and error.
func mosqPub(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "mosquitto_pub", args...).CombinedOutput()
	return string(out), err
}

// proxyTo listens on 127.0.0.1:port and relays every connection to
// 127.0.0.1:target. Tests use it to make an upstream appear at a known
// moment: after its subscribers are in place.
func proxyTo(t testing.TB, port, target int) {
	t.Helper()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", target))
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, u)
			mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(u, c); u.Close() })
			wg.Go(func() { _, _ = io.Copy(c, u); c.Close() })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}
