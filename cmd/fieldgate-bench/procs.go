package main

// Subprocesses (the gateway binary, Debian's mosquitto, socat, the pymodbus
// slave), /proc sampling, /metrics scraping and a TCP proxy that can cut the
// bridge's upstream link. Everything listens and dials on loopback only.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/PID/stat; Linux
// fixes it at 100 for user space on every architecture Go supports.
const clockTicks = 100

// checkLoopback refuses any address that is not on the loopback range.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	return checkLoopbackHost(host)
}

func checkLoopbackHost(host string) error {
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("refusing non-loopback target %q: the bench only runs on 127.0.0.0/8 or ::1", host)
	}
	return nil
}

// freePort returns a TCP port on host that was free a moment ago.
func freePort(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// lockedBuffer collects a subprocess's output for error messages.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 { // keep memory bounded on chatty processes
		l.b.Reset()
		l.b.WriteString("[earlier output discarded]\n")
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// proc is a running subprocess that the bench started and will stop.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
}

func startProc(name string, path string, args ...string) (*proc, error) {
	p := &proc{name: name, out: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, then SIGKILL after grace, and waits.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// kill9 kills without warning and waits.
func (p *proc) kill9() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// waitFor polls cond every 20ms until it holds, the process exits or the
// timeout passes.
func (p *proc) waitFor(timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if p.exited() {
			return fmt.Errorf("%s exited before %s: %s", p.name, what, tail(p.out.String(), 2000))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: no %s after %s: %s", p.name, what, timeout, tail(p.out.String(), 2000))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// broker is a system under test: an MQTT listener on loopback backed by one
// process whose CPU and memory can be read from /proc.
type broker struct {
	kind    string // "gateway" or "mosquitto"
	addr    string
	httpURL string // gateway only
	p       *proc
	dir     string
	config  string
	bin     string
}

// cpuSeconds is utime+stime of the broker process.
func (b *broker) cpuSeconds() (float64, error) { return procCPU(b.p.pid()) }

func procCPU(pid int) (float64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read cpu of pid %d: %w", pid, err)
	}
	// The command name may contain spaces: fields start after the last ')'.
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("pid %d: short /proc stat", pid)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64) // field 14 overall
	st, err2 := strconv.ParseUint(f[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("pid %d: parse /proc stat: %w", pid, err)
	}
	return float64(ut+st) / clockTicks, nil
}

// procSyscalls returns the read and write system calls a process has made
// (/proc/PID/io syscr, syscw): per message, they show how well a broker
// batches its socket I/O.
func procSyscalls(pid int) (reads, writes int64, err error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("read io of pid %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		n, perr := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if perr != nil {
			continue
		}
		switch k {
		case "syscr":
			reads = n
		case "syscw":
			writes = n
		}
	}
	return reads, writes, nil
}

// procMem returns VmRSS and VmHWM in bytes.
func procMem(pid int) (rss, hwm int64, err error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("read memory of pid %d: %w", pid, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		f := strings.Fields(v)
		n, perr := strconv.ParseInt(f[0], 10, 64)
		if perr != nil {
			return 0, 0, fmt.Errorf("pid %d: parse %s: %w", pid, k, perr)
		}
		if k == "VmRSS" {
			rss = n << 10
		} else {
			hwm = n << 10
		}
	}
	return rss, hwm, nil
}

// procAnon returns RssAnon in bytes: the process's anonymous memory (heap,
// stacks), without the file pages of the store it has mapped, which come
// and go with the backlog and belong to the page cache.
func procAnon(pid int) (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read memory of pid %d: %w", pid, err)
	}
	for line := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(line, "RssAnon:"); ok {
			f := strings.Fields(v)
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("pid %d: parse RssAnon: %w", pid, err)
			}
			return n << 10, nil
		}
	}
	return 0, fmt.Errorf("pid %d: no RssAnon in /proc status", pid)
}

// rssSampler records the peak VmRSS of a pid while running.
type rssSampler struct {
	stop chan struct{}
	done chan struct{}
	peak int64
}

func sampleRSS(pid int, every time.Duration) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if rss, _, err := procMem(pid); err == nil && rss > s.peak {
				s.peak = rss
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// finish stops sampling and returns the peak in bytes.
func (s *rssSampler) finish() int64 {
	close(s.stop)
	<-s.done
	return s.peak
}

// mosquittoConf is the config for a mosquitto under test or as upstream: it
// neither drops nor throttles (queues and in-flight windows unlimited).
func mosquittoConf(addr string, inflight int) string {
	host, port, _ := net.SplitHostPort(addr)
	return fmt.Sprintf(`listener %s %s
allow_anonymous true
persistence false
max_queued_messages 0
max_inflight_messages %d
log_type error
log_type warning
`, port, host, inflight)
}

// startMosquitto starts mosquitto on host with a fresh port in dir and waits
// until it accepts connections.
func startMosquitto(bin, dir, host string, inflight int) (*broker, error) {
	addr, err := newTargetDir(host, dir, "mosquitto")
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(mosquittoConf(addr, inflight)), 0o600); err != nil {
		return nil, fmt.Errorf("mosquitto config: %w", err)
	}
	p, err := startProc("mosquitto", bin, "-c", conf)
	if err != nil {
		return nil, err
	}
	b := &broker{kind: "mosquitto", addr: addr, p: p, dir: dir, config: conf, bin: bin}
	if err := b.awaitListener(10 * time.Second); err != nil {
		return nil, err
	}
	return b, nil
}

// newTargetDir creates a target's dir and picks a fresh port on host for
// it; what names the target in errors.
func newTargetDir(host, dir, what string) (addr string, err error) {
	port, err := freePort(host)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("%s dir: %w", what, err)
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), nil
}

// awaitListener waits until b accepts connections; if it does not within
// timeout, it stops b.
func (b *broker) awaitListener(timeout time.Duration) error {
	err := b.p.waitFor(timeout, "listener on "+b.addr, func() bool { return canDial(b.addr) })
	if err != nil {
		b.p.stop(time.Second)
	}
	return err
}

func canDial(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// gatewaySpec is what a gateway config needs beyond its ports and data dir.
type gatewaySpec struct {
	upstream string // host:port of the bridge's upstream; "" = no bridge
	forward  string // forward route filter
	devices  string // a YAML devices: section, or ""
	maxBytes string // bridge.buffer.max_bytes
}

// gatewayConf renders a gateway config. The bridge's reconnect backoff is
// shortened (100ms..1s instead of 1s..2m) so that drain timings and soak
// flaps measure the buffer, not the reconnect jitter; when_full is reject
// so a full buffer shows as refused publishes, never as silent drops.
func gatewayConf(id, mqtt, http, dataDir string, s gatewaySpec) string {
	var b strings.Builder
	fmt.Fprintf(&b, `gateway:
  id: %s
  data_dir: %s
  log: {level: warn, format: text}
  http: {address: %s}
broker:
  listeners:
    - {type: tcp, address: %s}
  auth: {anonymous: true}
`, id, dataDir, http, mqtt)
	if s.devices != "" {
		b.WriteString(s.devices)
	}
	if s.upstream != "" {
		mb := s.maxBytes
		if mb == "" {
			mb = "4GiB"
		}
		fmt.Fprintf(&b, `bridge:
  upstream:
    url: mqtt://%s
    protocol: "5"
    client_id: "{gateway}"
    backoff: {min: 100ms, max: 1s}
  forward:
    - {filter: %q, prefix: "sites/{gateway}/", qos: 1}
  buffer:
    max_bytes: %s
    when_full: reject
`, s.upstream, s.forward, mb)
	}
	return b.String()
}

// startGateway writes a config into dir and starts the gateway binary, then
// waits for /readyz.
func startGateway(bin, dir, host string, s gatewaySpec) (*broker, error) {
	mp, err := freePort(host)
	if err != nil {
		return nil, err
	}
	hp, err := freePort(host)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("gateway dir: %w", err)
	}
	b := &broker{
		kind:    "gateway",
		addr:    net.JoinHostPort(host, strconv.Itoa(mp)),
		httpURL: "http://" + net.JoinHostPort(host, strconv.Itoa(hp)),
		dir:     dir,
		config:  filepath.Join(dir, "fieldgate.yaml"),
		bin:     bin,
	}
	conf := gatewayConf("bench", b.addr, strings.TrimPrefix(b.httpURL, "http://"), filepath.Join(dir, "data"), s)
	if err := os.WriteFile(b.config, []byte(conf), 0o600); err != nil {
		return nil, fmt.Errorf("gateway config: %w", err)
	}
	return b, b.restart()
}

// restart starts the gateway process again on the same config and data dir.
func (b *broker) restart() error {
	p, err := startProc("fieldgate", b.bin, "run", "--config", b.config)
	if err != nil {
		return err
	}
	b.p = p
	client := &http.Client{Timeout: time.Second}
	err = p.waitFor(60*time.Second, "/readyz", func() bool {
		resp, err := client.Get(b.httpURL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if err != nil {
		p.stop(time.Second)
		return err
	}
	return nil
}

// diagnose describes the process after a load error: whether it exited
// (and how) and the tail of its output.
func (b *broker) diagnose() string {
	state := "still running"
	select {
	case <-b.p.done:
		state = "exited: " + b.p.cmd.ProcessState.String()
	case <-time.After(500 * time.Millisecond):
	}
	return fmt.Sprintf(" [%s %s; output: %s]", b.kind, state, tail(b.p.out.String(), 1500))
}

// stop ends the broker process gracefully.
func (b *broker) stop() { b.p.stop(10 * time.Second) }

// metrics scrapes /metrics and returns every sample without labels summed
// by metric name (labels are dropped: the bench wants totals).
func (b *broker) metrics() (map[string]float64, error) {
	if b.httpURL == "" {
		return nil, errors.New("mosquitto has no /metrics")
	}
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(b.httpURL + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("scrape metrics: %w", err)
	}
	defer resp.Body.Close()
	return parseMetrics(resp.Body)
}

func parseMetrics(r io.Reader) (map[string]float64, error) {
	m := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		name := line[:i]
		if j := strings.IndexByte(name, '{'); j >= 0 {
			name = name[:j]
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[name] += v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read metrics: %w", err)
	}
	return m, nil
}

// proxy forwards TCP connections from a loopback port to a target; cut
// closes the listener and every live connection, join listens again on the
// same port. It stands in for an upstream link that goes down.
type proxy struct {
	addr, target string

	mu        sync.Mutex
	ln        net.Listener
	conns     map[net.Conn]struct{}
	connected time.Time // when the first connection after the last join was accepted
	wg        sync.WaitGroup
}

func newProxy(addr, target string) (*proxy, error) {
	if err := errors.Join(checkLoopback(addr), checkLoopback(target)); err != nil {
		return nil, err
	}
	return &proxy{addr: addr, target: target, conns: map[net.Conn]struct{}{}}, nil
}

// join starts accepting on addr.
func (x *proxy) join() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.ln != nil {
		return nil
	}
	var ln net.Listener
	var err error
	for range 50 { // the port may linger briefly after cut
		if ln, err = net.Listen("tcp", x.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("proxy listen %s: %w", x.addr, err)
	}
	x.ln, x.connected = ln, time.Time{}
	x.wg.Add(1)
	go x.accept(ln)
	return nil
}

func (x *proxy) accept(ln net.Listener) {
	defer x.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		x.mu.Lock()
		if x.connected.IsZero() {
			x.connected = time.Now()
		}
		x.mu.Unlock()
		up, err := net.DialTimeout("tcp", x.target, 2*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		x.mu.Lock()
		if x.ln != ln { // cut raced with this accept
			x.mu.Unlock()
			c.Close()
			up.Close()
			return
		}
		x.conns[c], x.conns[up] = struct{}{}, struct{}{}
		x.mu.Unlock()
		x.wg.Add(2)
		pipe := func(dst, src net.Conn) {
			defer x.wg.Done()
			_, _ = io.Copy(dst, src)
			dst.Close()
			src.Close()
			x.mu.Lock()
			delete(x.conns, dst)
			delete(x.conns, src)
			x.mu.Unlock()
		}
		go pipe(up, c)
		go pipe(c, up)
	}
}

// connectedAt returns when the first connection after the last join was
// accepted (zero if none was).
func (x *proxy) connectedAt() time.Time {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.connected
}

// cut stops listening and drops every live connection, then waits for the
// proxy's goroutines.
func (x *proxy) cut() {
	x.mu.Lock()
	if x.ln != nil {
		x.ln.Close()
		x.ln = nil
	}
	for c := range x.conns {
		c.Close()
	}
	x.mu.Unlock()
	x.wg.Wait()
}

// waitCtx sleeps for d or until ctx is done.
func waitCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// selfCPU returns the CPU seconds this process has used (0 if unknown).
func selfCPU() float64 {
	v, err := procCPU(os.Getpid())
	if err != nil {
		return 0
	}
	return v
}
