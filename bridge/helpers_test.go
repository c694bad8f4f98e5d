package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldgate/fieldgate/buffer"
)

const mosquittoBin = "/usr/sbin/mosquitto"

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: testLogLevel}))
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	return port
}

// startMosquitto runs a private mosquitto with the given listener lines
// (each "listener PORT 127.0.0.1" block is the caller's) and returns the
// port of the first listener. It is killed at cleanup.
func startMosquitto(t testing.TB, conf string, port int) {
	t.Helper()
	if _, err := os.Stat(mosquittoBin); err != nil {
		t.Fatalf("mosquitto is required (apt-get install -y mosquitto): %v", err)
	}
	dir := t.TempDir()
	full := "allow_anonymous true\npersistence false\nmax_queued_messages 0\nmax_inflight_messages 0\nlog_dest stderr\nlog_type error\n" + conf
	cf := filepath.Join(dir, "up.conf")
	if err := os.WriteFile(cf, []byte(full), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "up.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(mosquittoBin, "-c", cf)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start mosquitto: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		_ = logf.Close()
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "up.log"))
			t.Logf("mosquitto log:\n%s", log)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
		if err == nil {
			_ = c.Close()
			return
		}
		select {
		case err := <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "up.log"))
			t.Fatalf("mosquitto exited: %v\n%s", err, log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto did not listen on %d: %v", port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// plainMosquitto starts mosquitto with one plain TCP listener.
func plainMosquitto(t testing.TB) string {
	port := freePort(t)
	startMosquitto(t, fmt.Sprintf("listener %d 127.0.0.1\n", port), port)
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// proxy is an in-process TCP proxy whose link can be refused, cut and
// frozen.
type proxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	down  bool
	thaw  chan struct{} // non-nil while frozen; closed to unfreeze
	cuts  int
}

func newProxy(t testing.TB, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		_ = ln.Close()
		p.setFrozen(false)
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			_ = c.Close()
			continue
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[u] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Go(func() { p.pipe(c, u, false) })
		p.wg.Go(func() { p.pipe(u, c, true) })
	}
}

// pipe copies src to dst; the upstream→client direction obeys freezing.
func (p *proxy) pipe(src, dst net.Conn, freezable bool) {
	defer func() {
		_ = src.Close()
		_ = dst.Close()
		p.mu.Lock()
		delete(p.conns, src)
		delete(p.conns, dst)
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if freezable {
				p.mu.Lock()
				thaw := p.thaw
				p.mu.Unlock()
				if thaw != nil {
					<-thaw
				}
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *proxy) setDown(down bool) {
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
}

// cut closes every live connection.
func (p *proxy) cut() {
	p.mu.Lock()
	for c := range p.conns {
		_ = c.Close()
	}
	p.cuts++
	p.mu.Unlock()
}

func (p *proxy) setFrozen(frozen bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case frozen && p.thaw == nil:
		p.thaw = make(chan struct{})
	case !frozen && p.thaw != nil:
		close(p.thaw)
		p.thaw = nil
	}
}

// observer subscribes on the upstream and checks per-publisher order of
// payloads "<publisher>:<n>".
type observer struct {
	c *paho.Client

	mu       sync.Mutex
	last     map[string]int
	seen     map[string]map[int]bool
	unique   int
	dups     int
	reorders []string
	other    []*paho.Publish
}

func newObserver(t testing.TB, addr, filter string, qos byte) *observer {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	o := &observer{last: map[string]int{}, seen: map[string]map[int]bool{}}
	o.c = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			o.record(pr.Packet)
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := o.c.Connect(ctx, &paho.Connect{ClientID: fmt.Sprintf("observer-%d", time.Now().UnixNano()), CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatalf("observer connect: %v", err)
	}
	if _, err := o.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}}); err != nil {
		t.Fatalf("observer subscribe: %v", err)
	}
	t.Cleanup(func() {
		_ = o.c.Disconnect(&paho.Disconnect{})
		<-o.c.Done()
	})
	return o
}

func (o *observer) record(p *paho.Publish) {
	o.mu.Lock()
	defer o.mu.Unlock()
	pub, ns, ok := strings.Cut(string(p.Payload), ":")
	n, err := strconv.Atoi(ns)
	if !ok || err != nil {
		o.other = append(o.other, p)
		return
	}
	key := p.Topic + "|" + pub
	s := o.seen[key]
	if s == nil {
		s = map[int]bool{}
		o.seen[key] = s
	}
	if s[n] {
		o.dups++
		return
	}
	if last, ok := o.last[key]; ok && n < last {
		o.reorders = append(o.reorders, fmt.Sprintf("%s: %d after %d", key, n, last))
	}
	s[n] = true
	o.unique++
	o.last[key] = max(o.last[key], n)
}

func (o *observer) counts() (unique, dups int, reorders []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.unique, o.dups, append([]string(nil), o.reorders...)
}

func (o *observer) others() []*paho.Publish {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]*paho.Publish(nil), o.other...)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// openQueue opens a real buffer in a temp dir and runs it until cleanup.
func openQueue(t testing.TB, cfg buffer.Config) *buffer.Queue {
	t.Helper()
	cfg.Defaults()
	q, err := buffer.Open(t.TempDir(), cfg, testLogger(t))
	if err != nil {
		t.Fatalf("buffer.Open: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- q.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("buffer Run: %v", err)
		}
		if err := q.Close(); err != nil {
			t.Errorf("buffer Close: %v", err)
		}
	})
	return q
}

func testConfig(url string) Config {
	c := Config{
		Upstream: UpstreamConfig{
			URL:     url,
			Backoff: Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond},
		},
		Forward: []ForwardRoute{{Filter: "myhome/#", Prefix: "sites/{gateway}/"}},
	}
	c.Defaults()
	return c
}

// startBridge runs b until cleanup and checks that Run returned nil.
func startBridge(t testing.TB, b *Bridge) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func newBridge(t testing.TB, cfg Config, q Queue, local LocalPublisher, dial DialFunc) *Bridge {
	t.Helper()
	b, err := New(cfg, Options{Gateway: "gw1", Queue: q, Local: local, Logger: testLogger(t), Dial: dial})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return b
}

// ingestConcurrently publishes n messages from each of pubs publishers
// (payload "p<i>:<n>") on myhome/<route>.
func ingestConcurrently(t testing.TB, b *Bridge, pubs, n int, qos byte, topic func(pub int) string) {
	t.Helper()
	start := time.Now()
	defer func() { t.Logf("ingested %d×%d in %v", pubs, n, time.Since(start)) }()
	var wg sync.WaitGroup
	errs := make(chan error, pubs)
	for p := range pubs {
		wg.Go(func() {
			for i := range n {
				m := Message{Topic: topic(p), QoS: qos, Payload: fmt.Appendf(nil, "p%d:%d", p, i)}
				if err := b.Ingest(context.Background(), m); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Ingest: %v", err)
	}
}

var testLogLevel = slog.LevelWarn
