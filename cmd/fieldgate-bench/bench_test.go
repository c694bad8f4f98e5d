package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The bench in --quick mode for two throughput scenarios, against mosquitto
// and, when ./cmd/fieldgate builds, the gateway: the JSON parses, every
// message is accounted for and the ratios and goals are computed. Speed is
// not asserted.
func TestQuickBenchJSON(t *testing.T) {
	if _, err := os.Stat("/usr/sbin/mosquitto"); err != nil {
		t.Fatalf("mosquitto is not installed (bash .ci/run installs it): %v", err)
	}
	args := []string{"--quick", "--json", "--only", "qos1-2x2,qos0-4x1", "--messages", "1000"}
	targets := []string{"mosquitto"}
	bin := filepath.Join(t.TempDir(), "fieldgate")
	build := exec.Command("go", "build", "-o", bin, "./cmd/fieldgate")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Logf("./cmd/fieldgate does not build, measuring mosquitto only:\n%s", out)
		args = append(args, "--targets", "mosquitto")
	} else {
		targets = append(targets, "gateway")
		args = append(args, "--gateway", bin)
	}
	rep, got, saved := runJSON(t, 50*time.Second, args...)
	t.Logf("measured %v", targets)
	for _, sc := range []struct {
		name       string
		pubs, subs int
	}{{"qos1-2x2", 2, 2}, {"qos0-4x1", 4, 1}} {
		for _, tg := range targets {
			r, ok := got[sc.name+"/"+tg]
			if !ok {
				t.Errorf("no result for %s on %s", sc.name, tg)
				continue
			}
			if r.Error != "" {
				t.Errorf("%s on %s: %s", sc.name, tg, r.Error)
			}
			if r.Published != 1000 {
				t.Errorf("%s on %s: published %d, want 1000", sc.name, tg, r.Published)
			}
			if want := r.Published * int64(sc.subs); r.Expected != want {
				t.Errorf("%s on %s: expected deliveries %d, want %d", sc.name, tg, r.Expected, want)
			}
			if want := float64(r.Delivered) / float64(r.Expected); r.DeliveryRatio != want {
				t.Errorf("%s on %s: delivery ratio %v, want %d/%d", sc.name, tg, r.DeliveryRatio, r.Delivered, r.Expected)
			}
			if r.QoS == 1 && r.Acked != r.Published {
				t.Errorf("%s on %s: acked %d of %d", sc.name, tg, r.Acked, r.Published)
			}
			if r.Rate <= 0 || r.Seconds <= 0 || r.PeakRSS <= 0 {
				t.Errorf("%s on %s: rate %v over %vs, peak RSS %d: want all positive", sc.name, tg, r.Rate, r.Seconds, r.PeakRSS)
			}
		}
	}
	// Mosquitto with unlimited queues must deliver every QoS 1 message.
	if r := got["qos1-2x2/mosquitto"]; r.Delivered != r.Expected {
		t.Errorf("mosquitto qos1-2x2 delivered %d of %d", r.Delivered, r.Expected)
	}
	var rateGoals int
	for _, g := range rep.Goals {
		if g.Metric != mRate {
			continue
		}
		rateGoals++
		wantStatus := "n/a"
		if len(targets) == 2 {
			gw, mq := got[g.Scenario+"/gateway"], got[g.Scenario+"/mosquitto"]
			if math.Abs(g.Measured-gw.Rate/mq.Rate) > 1e-9 {
				t.Errorf("goal %s: ratio %v, want %v/%v", g.Scenario, g.Measured, gw.Rate, mq.Rate)
			}
			wantStatus = g.Status // pass or miss: speed is not asserted
			if wantStatus != "pass" && wantStatus != "miss" {
				t.Errorf("goal %s: status %q", g.Scenario, g.Status)
			}
		}
		if g.Status != wantStatus {
			t.Errorf("goal %s: status %q, want %q", g.Scenario, g.Status, wantStatus)
		}
	}
	if rateGoals != 2 {
		t.Errorf("%d throughput goals, want 2: %+v", rateGoals, rep.Goals)
	}

	// The saved report prints as the table.
	var table, stderr bytes.Buffer
	if code := run(context.Background(), []string{"--from-json", saved}, &table, &stderr); code != 0 {
		t.Fatalf("--from-json: exit %d: %s", code, stderr.String())
	}
	for _, want := range []string{"gateway", "mosquitto", "qos1-2x2", "qos0-4x1", mRate, mDelivery, "≥ 1.0× mosquitto"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
}

func TestRefusesNonLoopback(t *testing.T) {
	for _, host := range []string{"10.0.0.1", "192.168.1.2", "8.8.8.8", "example.com"} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), []string{"--host", host}, &stdout, &stderr); code != 2 {
			t.Errorf("--host %s: exit %d, want 2", host, code)
		}
		if !strings.Contains(stderr.String(), "non-loopback") {
			t.Errorf("--host %s: stderr %q does not explain the refusal", host, stderr.String())
		}
	}
	if _, err := dial(context.Background(), dialOpts{addr: "10.1.2.3:1883"}); err == nil || !strings.Contains(err.Error(), "non-loopback") {
		t.Errorf("dial 10.1.2.3: %v, want a refusal", err)
	}
	if _, err := newProxy("127.0.0.1:1", "192.168.0.1:1883"); err == nil {
		t.Error("proxy to 192.168.0.1: no refusal")
	}
}

func TestTracker(t *testing.T) {
	tr := newTracker()
	for _, s := range []uint32{0, 63, 64, 1000, 63} {
		tr.mark(7, s)
	}
	tr.mark(1, 5)
	if tr.unique.Load() != 5 || tr.dups.Load() != 1 {
		t.Fatalf("unique %d dups %d, want 5 and 1", tr.unique.Load(), tr.dups.Load())
	}
	got := map[uint32][]uint32{}
	tr.each(func(p, s uint32) { got[p] = append(got[p], s) })
	want := map[uint32][]uint32{7: {0, 63, 64, 1000}, 1: {5}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("each (-want +got):\n%s", d)
	}
	if !tr.has(7, 1000) || tr.has(7, 999) || tr.has(2, 0) {
		t.Error("has disagrees with mark")
	}
}

func TestParseMetrics(t *testing.T) {
	in := `# HELP fieldgate_buffer_messages Messages in the buffer.
# TYPE fieldgate_buffer_messages gauge
fieldgate_buffer_messages 1234
fieldgate_device_polls_total{device="a"} 10
fieldgate_device_polls_total{device="b"} 5
go_gc_duration_seconds{quantile="0.5"} 1.5e-05
`
	m, err := parseMetrics(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if v, name, ok := metricValue(m, metricBacklog, hintBacklog); !ok || v != 1234 || name != metricBacklog {
		t.Errorf("backlog = %v %q %v", v, name, ok)
	}
	if v, _, ok := metricValue(m, metricPolls, hintPolls); !ok || v != 15 {
		t.Errorf("polls = %v %v, want 15 (summed over labels)", v, ok)
	}
	if v, name, ok := metricValue(map[string]float64{"fieldgate_devices_polls_total": 3}, metricPolls, hintPolls); !ok || v != 3 {
		t.Errorf("fallback by hint: %v %q %v", v, name, ok)
	}
}

func TestWireLimit(t *testing.T) {
	// 9600 8N1: 17 chars × 10 bits = 170 bits = 17.708 ms, plus 2 × t3.5
	// (3.5 × 11 / 9600 = 4.010 ms) = 25.729 ms per poll.
	if got, want := wireLimit(9600), 9600/(170+77.0); math.Abs(got-want) > 1e-9 || math.Abs(got-38.87) > 0.01 {
		t.Errorf("wireLimit(9600) = %v, want %v", got, want)
	}
	// 115200: 1.476 ms of bits + 2 × 1.75 ms.
	if got, want := wireLimit(115200), 1/(170.0/115200+0.0035); math.Abs(got-want) > 1e-9 {
		t.Errorf("wireLimit(115200) = %v, want %v", got, want)
	}
}

func TestPooledSlope(t *testing.T) {
	const h = 3600.0
	// The live heap is what is judged; VmRSS and RssAnon swing freely.
	flat := []rssSample{
		{At: 0, RSS: 40 << 20, Anon: 20 << 20, Live: 10 << 20, Gen: 0}, {At: h, RSS: 70 << 20, Anon: 50 << 20, Live: 10 << 20, Gen: 0},
		{At: 0.5 * h, RSS: 40 << 20, Anon: 30 << 20, Live: 30 << 20, Gen: 1}, {At: 1.5 * h, RSS: 90 << 20, Anon: 60 << 20, Live: 30 << 20, Gen: 1},
	}
	if got := pooledSlope(flat); got != 0 {
		t.Errorf("restarts at a different level and mapped pages are not growth: slope %v", got)
	}
	growing := []rssSample{
		{At: 0, Live: 10 << 20, Gen: 0}, {At: h, Live: 14 << 20, Gen: 0},
		{At: 2 * h, Live: 5 << 20, Gen: 1}, {At: 3 * h, Live: 9 << 20, Gen: 1},
	}
	if got := pooledSlope(growing); math.Abs(got-4) > 1e-9 {
		t.Errorf("slope %v MB/h, want 4", got)
	}
	if got := pooledSlope(nil); got != 0 {
		t.Errorf("no samples: slope %v", got)
	}
}

// The proxy that stands in for the upstream link: messages pass while it is
// joined, cut drops live connections and refuses new ones, join restores.
func TestProxyCutsAndRestores(t *testing.T) {
	if _, err := os.Stat("/usr/sbin/mosquitto"); err != nil {
		t.Fatalf("mosquitto is not installed (bash .ci/run installs it): %v", err)
	}
	up, err := startMosquitto("/usr/sbin/mosquitto", t.TempDir(), "127.0.0.1", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer up.stop()
	port, err := freePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	px, err := newProxy("127.0.0.1:"+strconv.Itoa(port), up.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer px.cut()
	ctx := context.Background()
	if _, err := dial(ctx, dialOpts{addr: px.addr, clientID: "early"}); err == nil {
		t.Fatal("dial through a proxy that never joined succeeded")
	}
	if err := px.join(); err != nil {
		t.Fatal(err)
	}
	tr := newTracker()
	sub, err := dial(ctx, dialOpts{addr: up.addr, clientID: "sub", clean: true, recv: tr})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.close()
	if err := sub.subscribe("x/#", 1); err != nil {
		t.Fatal(err)
	}
	pc, err := dial(ctx, dialOpts{addr: px.addr, clientID: "pub", clean: true, window: 4})
	if err != nil {
		t.Fatal(err)
	}
	p := newPublisher(pc, 3, "x/y", 1, 16)
	for seq := range uint32(10) {
		if err := p.publish(seq); err != nil {
			t.Fatal(err)
		}
	}
	if err := pc.waitAcked(4, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if pc.ackedN.Load() != 10 {
		t.Fatalf("acked %d of 10 through the proxy", pc.ackedN.Load())
	}
	waitDeliveries(ctx, []*tracker{tr}, 10, 5*time.Second)
	if tr.unique.Load() != 10 {
		t.Fatalf("subscriber got %d of 10", tr.unique.Load())
	}
	px.cut()
	select {
	case <-pc.done:
	case <-time.After(5 * time.Second):
		t.Fatal("cut left the proxied connection open")
	}
	if _, err := dial(ctx, dialOpts{addr: px.addr, clientID: "during-cut"}); err == nil {
		t.Fatal("dial through a cut proxy succeeded")
	}
	if err := px.join(); err != nil {
		t.Fatal(err)
	}
	again, err := dial(ctx, dialOpts{addr: px.addr, clientID: "after", clean: true})
	if err != nil {
		t.Fatalf("dial after join: %v", err)
	}
	again.close()
}

func TestGoSlaveFrames(t *testing.T) {
	// The textbook frame: read 10 holding registers from 0 on unit 1.
	if got := crc16([]byte{1, 3, 0, 0, 0, 10}); got != 0xCDC5 {
		t.Errorf("crc16 = %#04x, want 0xcdc5 (sent as C5 CD)", got)
	}
	s := &goSlave{}
	s.regs[101] = 0x41AC
	for _, tc := range []struct {
		name string
		req  []byte
		want []byte
	}{
		{"read float", []byte{1, 3, 0, 100, 0, 2}, []byte{1, 3, 4, 0, 0, 0x41, 0xAC}},
		{"illegal function", []byte{1, 6, 0, 100, 0, 2}, []byte{1, 0x86, 1}},
		{"illegal address", []byte{1, 4, 1, 0x2C, 0, 2}, []byte{1, 0x84, 2}},
	} {
		req := binary.LittleEndian.AppendUint16(tc.req, crc16(tc.req))
		got := s.respond(req)
		want := binary.LittleEndian.AppendUint16(tc.want, crc16(tc.want))
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, d)
		}
	}
}

func TestMedianKeepsEveryLoss(t *testing.T) {
	runs := []result{
		{Rate: 10, Published: 100, Expected: 200, Delivered: 200, PeakRSS: 5},
		{Rate: 30, Published: 100, Expected: 200, Delivered: 199, PeakRSS: 9, CPUPerMsg: 3},
		{Rate: 20, Published: 100, Expected: 200, Delivered: 200, PeakRSS: 7, CPUPerMsg: 2},
	}
	m := median(runs)
	want := result{
		Rate: 20, CPUPerMsg: 2, PeakRSS: 9,
		Published: 300, Expected: 600, Delivered: 599, DeliveryRatio: 599.0 / 600,
		Extra: map[string]float64{"runs": 3, "rate_min": 10, "rate_max": 30},
	}
	if d := cmp.Diff(want, m); d != "" {
		t.Errorf("median (-want +got):\n%s", d)
	}
	if d := cmp.Diff(runs[0], median(runs[:1])); d != "" {
		t.Errorf("one run is returned as is (-want +got):\n%s", d)
	}
}

func TestSoakGrowth(t *testing.T) {
	// The live heap's peaks swing with the backlog; its floor and the
	// VmRSS peak stay put: no growth.
	first := []rssSample{{RSS: 80 << 20, Live: 40 << 20}, {RSS: 40 << 20, Live: 12 << 20}}
	same := []rssSample{{RSS: 40 << 20, Live: 13 << 20}, {RSS: 84 << 20, Live: 63 << 20}}
	if grew(extremes(first), extremes(same)) {
		t.Error("live heap peaks and a VmRSS peak within 25% judged as growth")
	}
	if !grew(extremes(first), extremes([]rssSample{{RSS: 120 << 20, Live: 12 << 20}})) {
		t.Error("VmRSS peak 50% higher not judged as growth")
	}
	if !grew(extremes(first), extremes([]rssSample{{RSS: 80 << 20, Live: 20 << 20}, {RSS: 60 << 20, Live: 30 << 20}})) {
		t.Error("live heap floor 12 → 20 MB not judged as growth")
	}
}

// The drain scenario, small, in both modes: the upstream subscriber away
// during the drain (default) and live. Every acknowledged message reaches
// the upstream subscriber exactly once per publish, the drain is timed from
// the gateway's connection, and its goal row is computed. Speed is not
// asserted.
func TestQuickDrain(t *testing.T) {
	bin := buildGateway(t)
	for _, live := range []bool{false, true} {
		args := []string{"--quick", "--json", "--only", "drain", "--drain-messages", "3000", "--gateway", bin}
		if live {
			args = append(args, "--drain-live-subscriber")
		}
		rep, _, _ := runJSON(t, 60*time.Second, args...)
		if len(rep.Results) != 1 {
			t.Fatalf("live %v: %d results, want 1: %+v", live, len(rep.Results), rep.Results)
		}
		r := rep.Results[0]
		if r.Error != "" {
			t.Fatalf("live %v: %s", live, r.Error)
		}
		if r.Acked != 3000 || r.Expected != 3000 || r.Delivered != 3000 || r.Duplicates != 0 {
			t.Errorf("live %v: acked %d, expected %d, delivered %d (%d duplicates); want 3000 each, none twice", live, r.Acked, r.Expected, r.Delivered, r.Duplicates)
		}
		if r.Extra["backlog_before"] != 3000 {
			t.Errorf("live %v: backlog before the drain %v, want 3000", live, r.Extra["backlog_before"])
		}
		if _, ok := r.Extra["reconnect_s"]; !ok || r.Seconds <= 0 || r.Rate <= 0 {
			t.Errorf("live %v: drain not timed: %v s, %v msg/s, extra %v", live, r.Seconds, r.Rate, r.Extra)
		}
		if want := map[bool]string{false: "after the drain", true: "during the drain"}[live]; !strings.Contains(r.Note, want) {
			t.Errorf("live %v: note %q does not say %q", live, r.Note, want)
		}
		var timed bool
		for _, g := range rep.Goals {
			if g.Scenario == "drain" && g.Metric == "drain s" {
				timed = true
				if g.Measured != r.Seconds || g.Status != "pass" {
					t.Errorf("live %v: drain goal %+v, want %v s and pass (3000 messages)", live, g, r.Seconds)
				}
			}
		}
		if !timed {
			t.Errorf("live %v: no drain time goal in %+v", live, rep.Goals)
		}
	}
}

// TestQuickIngest runs the durable ingest scenario and its reference on the
// gateway, the ingest scenario on mosquitto and the floor: every publish
// acknowledged, the gateway's buffer holding all of them (ingest) or none
// (ingest-nostore), and the CPU shares and fdatasync batches reported.
func TestQuickIngest(t *testing.T) {
	bin := buildGateway(t)
	rep, got, saved := runJSON(t, 90*time.Second, "--quick", "--json", "--only", "ingest", "--ingest-messages", "3000", "--gateway", bin)
	if len(rep.Results) != 4 {
		t.Errorf("%d results, want ingest on both targets, ingest-nostore on the gateway and ingest-floor: %+v", len(rep.Results), rep.Results)
	}
	for key, stored := range map[string]float64{"ingest/gateway": 3000, "ingest/mosquitto": -1, "ingest-nostore/gateway": 0, "ingest-floor/floor": -1} {
		r, ok := got[key]
		if !ok {
			t.Errorf("no result for %s", key)
			continue
		}
		if r.Error != "" {
			t.Errorf("%s: %s", key, r.Error)
		}
		if r.Published != 3000 || r.Acked != 3000 {
			t.Errorf("%s: published %d, acked %d; want 3000 each", key, r.Published, r.Acked)
		}
		if r.Rate <= 0 || r.CPUPerMsg <= 0 || r.Extra["bench_cpu_s_per_msg"] <= 0 {
			t.Errorf("%s: rate %v, CPU %v s/msg, bench CPU %v s/msg: want all positive", key, r.Rate, r.CPUPerMsg, r.Extra["bench_cpu_s_per_msg"])
		}
		if want := float64(runtime.NumCPU()) / (r.CPUPerMsg + r.Extra["bench_cpu_s_per_msg"]); math.Abs(r.Extra["cpu_bound_per_s"]-want) > 1e-6*want {
			t.Errorf("%s: CPU-bound rate %v, want %v", key, r.Extra["cpu_bound_per_s"], want)
		}
		if v, ok := r.Extra["stored"]; stored >= 0 && (!ok || v != stored) {
			t.Errorf("%s: buffer stored %v (reported: %v), want %v", key, v, ok, stored)
		}
	}
	if !strings.Contains(got["ingest-nostore/gateway"].Note, "nothing is stored") {
		t.Errorf("ingest-nostore note %q does not say that nothing is stored", got["ingest-nostore/gateway"].Note)
	}
	// Both durable rows say how many messages an fdatasync carried: at
	// least one, at most the 64 in flight.
	for _, key := range []string{"ingest/gateway", "ingest-floor/floor"} {
		if v := got[key].Extra["msgs_per_fsync"]; v < 1 || v > ingestInflight {
			t.Errorf("%s: %v messages per fdatasync, want 1..%d", key, v, ingestInflight)
		}
	}
	if v := got["ingest-floor/floor"].Extra["batch_sync_ms"]; v <= 0 {
		t.Errorf("ingest-floor: write+fdatasync %v ms, want > 0", v)
	}
	if !strings.Contains(got["ingest-floor/floor"].Note, "upper bound") {
		t.Errorf("ingest-floor note %q does not say it is an upper bound", got["ingest-floor/floor"].Note)
	}
	// The table shows the floor's numbers in the first column.
	var table, stderr bytes.Buffer
	if code := run(context.Background(), []string{"--from-json", saved}, &table, &stderr); code != 0 {
		t.Fatalf("--from-json: exit %d: %s", code, stderr.String())
	}
	floorRate := fmt.Sprintf("%.0f", got["ingest-floor/floor"].Rate)
	if !regexp.MustCompile(`ingest-floor +acked msg/s +` + floorRate + ` `).MatchString(table.String()) {
		t.Errorf("table has no ingest-floor row with rate %s:\n%s", floorRate, table.String())
	}
	var judged bool
	for _, g := range rep.Goals {
		if g.Scenario == "ingest" {
			judged = g.Measured == got["ingest/gateway"].Rate && (g.Status == "pass" || g.Status == "miss")
		}
		if g.Scenario == "ingest-nostore" || g.Scenario == "ingest-floor" {
			t.Errorf("the reference has a goal: %+v", g)
		}
	}
	if !judged {
		t.Errorf("no ingest goal judged on the gateway's rate: %+v", rep.Goals)
	}
}

// buildGateway checks that mosquitto is installed and builds ./cmd/fieldgate
// into a temporary directory, for the scenarios that need both.
func buildGateway(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/usr/sbin/mosquitto"); err != nil {
		t.Fatalf("mosquitto is not installed (bash .ci/run installs it): %v", err)
	}
	bin := filepath.Join(t.TempDir(), "fieldgate")
	build := exec.Command("go", "build", "-o", bin, "./cmd/fieldgate")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build ./cmd/fieldgate: %v\n%s", err, out)
	}
	return bin
}

// runJSON runs the bench with args (which ask for --json) within timeout and
// returns its report, the results by "scenario/target", and the file the
// output was saved in.
func runJSON(t *testing.T, timeout time.Duration, args ...string) (report, map[string]result, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if code := run(ctx, args, &stdout, &stderr); code != 0 {
		t.Fatalf("%v: exit %d\nstdout:\n%s\nstderr:\n%s", args, code, stdout.String(), stderr.String())
	}
	var rep report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("JSON output does not parse: %v\n%s", err, stdout.String())
	}
	got := map[string]result{}
	for _, r := range rep.Results {
		got[r.Scenario+"/"+r.Target] = r
	}
	saved := filepath.Join(t.TempDir(), "report.json")
	if err := os.WriteFile(saved, stdout.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return rep, got, saved
}
