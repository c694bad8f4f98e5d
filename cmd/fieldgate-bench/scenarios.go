package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"
)

// Metric names read from the gateway's /metrics. They are constants so a
// rename in the gateway is a one-line fix here; when a name is absent the
// bench falls back to the first metric whose name contains the hint.
const (
	metricBacklog   = "fieldgate_buffer_messages"
	hintBacklog     = "buffer_messages"
	metricForwarded = "fieldgate_bridge_forwarded_total"
	hintForwarded   = "forwarded_total"
	metricPolls     = "fieldgate_device_polls_total"
	hintPolls       = "polls_total"
)

// result is one measurement of one target. Rate is the scenario's headline
// number: delivered messages/s for throughput, acknowledged publishes/s for
// ingest, messages/s arriving upstream for drain, polls/s for modbus.
type result struct {
	Scenario      string             `json:"scenario"`
	Target        string             `json:"target"`
	Publishers    int                `json:"publishers,omitempty"`
	Subscribers   int                `json:"subscribers,omitempty"`
	QoS           int                `json:"qos"`
	Window        int                `json:"window,omitempty"`
	Published     int64              `json:"published"`
	Acked         int64              `json:"acked"`
	Expected      int64              `json:"expected_deliveries"`
	Delivered     int64              `json:"delivered_unique"`
	Duplicates    int64              `json:"duplicates"`
	Seconds       float64            `json:"seconds"`
	Rate          float64            `json:"rate_per_s"`
	DeliveryRatio float64            `json:"delivery_ratio"`
	CPUSeconds    float64            `json:"cpu_seconds"`
	CPUPerMsg     float64            `json:"cpu_seconds_per_msg"`
	PeakRSS       int64              `json:"peak_rss_bytes"`
	Extra         map[string]float64 `json:"extra,omitempty"`
	Note          string             `json:"note,omitempty"`
	Error         string             `json:"error,omitempty"`
}

// shape is a publishers → subscribers pattern; every subscriber receives
// every publisher's messages.
type shape struct {
	name       string
	pubs, subs int
}

var shapes = []shape{{"2x2", 2, 2}, {"1x10", 1, 10}, {"4x1", 4, 1}}

// loadSpec is the load of one throughput, ingest or fill run.
type loadSpec struct {
	pubs, subs int
	qos        byte
	window     int           // per publisher
	messages   int64         // total publishes, split over publishers; 0 with duration
	duration   time.Duration // publish for this long instead of a count
	payload    int
	topic      string // publisher i publishes to topic+"/p<i>"
	subFilter  string
	idle       time.Duration // give up waiting for deliveries after this long without one
}

// loadRun is the outcome of driving a load against one broker address.
type loadRun struct {
	published, acked int64
	pubSent          []int64
	subs             []*tracker
	start, lastAck   time.Time
}

// drive connects publishers, publishes and waits for every
// acknowledgement. Subscribers are the caller's (driveAndWait).
func drive(ctx context.Context, addr string, s loadSpec, tag string) (*loadRun, error) {
	run := &loadRun{}
	pubs := make([]*client, s.pubs)
	for i := range pubs {
		c, err := dial(ctx, dialOpts{addr: addr, clientID: fmt.Sprintf("%s-pub%d", tag, i), clean: true, window: s.window})
		if err != nil {
			for _, p := range pubs[:i] {
				p.close()
			}
			return nil, err
		}
		pubs[i] = c
	}
	run.pubSent = make([]int64, s.pubs)
	per := s.messages / int64(s.pubs)
	var deadline time.Time
	run.start = time.Now()
	if s.duration > 0 {
		deadline = run.start.Add(s.duration)
	}
	var wg sync.WaitGroup
	errs := make([]error, s.pubs)
	for i, c := range pubs {
		wg.Go(func() {
			p := newPublisher(c, uint32(i), fmt.Sprintf("%s/p%d", s.topic, i), s.qos, s.payload)
			var seq int64
			for ; s.duration > 0 || seq < per; seq++ {
				if s.duration > 0 && seq%256 == 0 && time.Now().After(deadline) {
					break
				}
				if seq >= 1<<31 {
					break
				}
				if err := p.publish(uint32(seq)); err != nil {
					errs[i] = fmt.Errorf("publisher %d at seq %d: %w", i, seq, err)
					break
				}
			}
			run.pubSent[i] = seq
			if errs[i] == nil && s.qos > 0 {
				errs[i] = c.waitAcked(s.window, 2*time.Minute)
			} else if errs[i] == nil {
				errs[i] = c.flush()
			}
		})
	}
	wg.Wait()
	for i, c := range pubs {
		c.close() // for QoS 0 too: the broker reads the stream in order
		run.published += run.pubSent[i]
		run.acked += c.ackedN.Load()
		if t := c.acked.last.Load(); t > 0 && time.Unix(0, t).After(run.lastAck) {
			run.lastAck = time.Unix(0, t)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return run, err
	}
	return run, nil
}

// median folds repeated runs of one scenario on one target: rate, time,
// CPU and RSS come from the run with the median rate (RSS is the highest of
// all), while the counts are summed over every run so that a loss in any
// run shows in the delivery ratio. A failed run's error is kept.
func median(runs []result) result {
	if len(runs) == 1 {
		return runs[0]
	}
	sorted := slices.Clone(runs)
	slices.SortFunc(sorted, func(a, b result) int { return cmp.Compare(a.Rate, b.Rate) })
	m := sorted[len(sorted)/2]
	m.Published, m.Acked, m.Expected, m.Delivered, m.Duplicates = 0, 0, 0, 0, 0
	m.Extra = maps.Clone(m.Extra)
	if m.Extra == nil {
		m.Extra = map[string]float64{}
	}
	m.Extra["runs"], m.Extra["rate_min"], m.Extra["rate_max"] = float64(len(runs)), sorted[0].Rate, sorted[len(sorted)-1].Rate
	for _, r := range runs {
		m.Published += r.Published
		m.Acked += r.Acked
		m.Expected += r.Expected
		m.Delivered += r.Delivered
		m.Duplicates += r.Duplicates
		m.PeakRSS = max(m.PeakRSS, r.PeakRSS)
		if r.Error != "" && m.Error == "" {
			m.Error = r.Error
		}
	}
	m.DeliveryRatio = 0
	if m.Expected > 0 {
		m.DeliveryRatio = float64(m.Delivered) / float64(m.Expected)
	}
	return m
}

// waitDeliveries waits until the subscribers hold want unique messages in
// total, or none arrived for idle, and returns the time of the last one.
func waitDeliveries(ctx context.Context, subs []*tracker, want int64, idle time.Duration) time.Time {
	var last int64
	lastChange := time.Now()
	for {
		var n int64
		for _, t := range subs {
			n += t.unique.Load()
		}
		if n >= want {
			break
		}
		if n != last {
			last, lastChange = n, time.Now()
		} else if time.Since(lastChange) > idle {
			break
		}
		if waitCtx(ctx, 5*time.Millisecond) != nil {
			break
		}
	}
	var end int64
	for _, t := range subs {
		end = max(end, t.last.Load())
	}
	return time.Unix(0, end)
}

// throughput measures one publishers → subscribers run on broker b.
func throughput(ctx context.Context, b *broker, name string, s loadSpec) result {
	r := result{Scenario: name, Target: b.kind, Publishers: s.pubs, Subscribers: s.subs, QoS: int(s.qos), Window: s.window}
	cpu0, err := b.cpuSeconds()
	if err != nil {
		r.Error = err.Error()
		return r
	}
	sr0, sw0, ioErr := procSyscalls(b.p.pid())
	rs := sampleRSS(b.p.pid(), 100*time.Millisecond)
	run, end, err := driveAndWait(ctx, b.addr, s, b.kind)
	r.PeakRSS = peakRSS(b, rs)
	sr1, sw1, ioErr1 := procSyscalls(b.p.pid())
	if err != nil {
		err = fmt.Errorf("%w%s", err, b.diagnose())
	}
	cpu1, cerr := b.cpuSeconds()
	if err != nil {
		r.Error = err.Error()
	}
	if run == nil {
		return r
	}
	if cerr != nil && r.Error == "" {
		r.Error = cerr.Error()
	}
	r.Published, r.Acked = run.published, run.acked
	r.Expected = run.published * int64(s.subs)
	for _, t := range run.subs {
		r.Delivered += t.unique.Load()
		r.Duplicates += t.dups.Load()
	}
	if r.Expected > 0 {
		r.DeliveryRatio = float64(r.Delivered) / float64(r.Expected)
	}
	if el := end.Sub(run.start).Seconds(); el > 0 && r.Delivered > 0 {
		r.Seconds = el
		r.Rate = float64(r.Delivered) / el
	}
	r.CPUSeconds = cpu1 - cpu0
	if r.Delivered > 0 {
		r.CPUPerMsg = r.CPUSeconds / float64(r.Delivered)
		if ioErr == nil && ioErr1 == nil {
			r.Extra = map[string]float64{
				"read_syscalls_per_msg":  float64(sr1-sr0) / float64(r.Delivered),
				"write_syscalls_per_msg": float64(sw1-sw0) / float64(r.Delivered),
			}
		}
	}
	return r
}

// driveAndWait runs drive with its subscribers kept open until deliveries
// settle.
func driveAndWait(ctx context.Context, addr string, s loadSpec, tag string) (*loadRun, time.Time, error) {
	var subs []*client
	defer func() {
		for _, c := range subs {
			c.close()
		}
	}()
	var trackers []*tracker
	for i := range s.subs {
		tr := newTracker()
		c, err := dial(ctx, dialOpts{addr: addr, clientID: fmt.Sprintf("%s-sub%d", tag, i), clean: true, recv: tr})
		if err != nil {
			return nil, time.Time{}, err
		}
		subs = append(subs, c)
		if err := c.subscribe(s.subFilter, s.qos); err != nil {
			return nil, time.Time{}, err
		}
		trackers = append(trackers, tr)
	}
	ps := s
	ps.subs = 0
	run, err := drive(ctx, addr, ps, tag)
	if run == nil {
		return nil, time.Time{}, err
	}
	run.subs = trackers
	end := waitDeliveries(ctx, trackers, run.published*int64(len(trackers)), s.idle)
	if len(trackers) == 0 {
		end = run.lastAck
	}
	return run, end, err
}

// peakRSS stops the sampler and returns the larger of its peak and the
// process's VmHWM (each scenario runs on a fresh process, so VmHWM is the
// scenario's own peak, including spikes between samples).
func peakRSS(b *broker, rs *rssSampler) int64 {
	peak := rs.finish()
	if _, hwm, err := procMem(b.p.pid()); err == nil {
		peak = max(peak, hwm)
	}
	return peak
}

// metricStored counts the records the gateway's buffer made durable,
// metricSyncs the fdatasync rounds (group commits) that did it.
const (
	metricStored = "fieldgate_buffer_appended_total"
	hintStored   = "buffer_appended_total"
	metricSyncs  = "fieldgate_buffer_fsyncs_total"
	hintSyncs    = "buffer_fsyncs_total"
)

// ingest measures acknowledged publishes/s with no subscriber. scenario is
// "ingest" (every publish matches the gateway's forward route and is
// stored before it is acknowledged) or "ingest-nostore" (none matches: the
// gateway's MQTT path alone). On the gateway it checks the buffer's count
// of stored records against that: all acknowledged publishes, or none.
//
// Besides the target's CPU it reports the bench's own (the load generator
// runs on the same cores) and the rate at which the two would keep every
// core busy: no run can be faster, whatever the disk.
func ingest(ctx context.Context, b *broker, s loadSpec, scenario string) result {
	r := result{Scenario: scenario, Target: b.kind, Publishers: s.pubs, QoS: int(s.qos), Window: s.window, Extra: map[string]float64{}}
	if b.kind == "gateway" && scenario == "ingest" {
		// Every acknowledgement waits for an fsync, and with 64 in flight
		// at most 64 messages share one: 64 / fsync latency bounds the rate.
		if lat, err := fsyncLatency(b.dir); err == nil {
			r.Extra["fsync_ms"] = 1e3 * lat.Seconds()
			r.Extra["fsync_bound_per_s"] = ingestInflight / lat.Seconds()
		}
	}
	cpu0, err := b.cpuSeconds()
	if err != nil {
		r.Error = err.Error()
		return r
	}
	self0 := selfCPU()
	rs := sampleRSS(b.p.pid(), 100*time.Millisecond)
	run, err := drive(ctx, b.addr, s, b.kind)
	r.PeakRSS = peakRSS(b, rs)
	if err != nil {
		err = fmt.Errorf("%w%s", err, b.diagnose())
	}
	cpu1, _ := b.cpuSeconds()
	self1 := selfCPU()
	if err != nil {
		r.Error = err.Error()
	}
	if run == nil {
		return r
	}
	r.Published, r.Acked = run.published, run.acked
	r.CPUSeconds = cpu1 - cpu0
	if el := run.lastAck.Sub(run.start).Seconds(); el > 0 {
		r.Seconds = el
		r.Rate = float64(r.Acked) / el
	}
	if r.Acked > 0 {
		r.CPUPerMsg = r.CPUSeconds / float64(r.Acked)
		bench := (self1 - self0) / float64(r.Acked)
		r.Extra["bench_cpu_s_per_msg"] = bench
		if r.CPUPerMsg+bench > 0 {
			r.Extra["cpu_bound_per_s"] = float64(runtime.NumCPU()) / (r.CPUPerMsg + bench)
		}
	}
	switch {
	case b.kind == "mosquitto":
		r.Note = "no persistence: not durable, for reference only"
	case scenario == "ingest-nostore":
		r.Note = "reference: no forward route matches, nothing is stored (the MQTT path alone)"
	case b.kind == "floor":
		r.Note = "reference: the least any durable ingest does here (parse, append to a pre-written log, one fdatasync per batch, then PUBACK); no broker, no store: an upper bound, not a target"
	}
	if b.kind == "gateway" && r.Error == "" {
		m, err := b.metrics()
		if err != nil {
			r.Error = err.Error()
			return r
		}
		stored, _, ok := metricValue(m, metricStored, hintStored)
		want := float64(r.Acked)
		if scenario == "ingest-nostore" {
			want = 0
		}
		r.Extra["stored"] = stored
		if syncs, _, ok := metricValue(m, metricSyncs, hintSyncs); ok && syncs > 0 && stored > 0 {
			r.Extra["msgs_per_fsync"] = stored / syncs
		}
		if !ok || stored != want {
			r.Error = fmt.Sprintf("the buffer stored %.0f records (%s), want %.0f", stored, metricStored, want)
		}
	}
	return r
}

// fsyncLatency is the median time to append 64 records' worth of bytes to a
// file in dir and fsync it (the disk's part of one group commit).
func fsyncLatency(dir string) (time.Duration, error) {
	f, err := os.CreateTemp(dir, "fsync-probe-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, ingestInflight*256)
	lat := make([]time.Duration, 200)
	for i := range lat {
		t0 := time.Now()
		if _, err := f.Write(buf); err != nil {
			return 0, err
		}
		if err := f.Sync(); err != nil {
			return 0, err
		}
		lat[i] = time.Since(t0)
	}
	slices.Sort(lat)
	return lat[len(lat)/2], nil
}

// metricValue finds name (or, failing that, the first metric containing
// hint) in a scrape.
func metricValue(m map[string]float64, name, hint string) (float64, string, bool) {
	if v, ok := m[name]; ok {
		return v, name, true
	}
	for k, v := range m {
		if containsFold(k, hint) {
			return v, k, true
		}
	}
	return 0, "", false
}

func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// drain fills the gateway's buffer with the upstream down, then lets the
// upstream in and times the backlog's arrival there.
func drain(ctx context.Context, o *options, dir string) result {
	r := result{Scenario: "drain", Target: "gateway", QoS: 1}
	fail := func(err error) result { r.Error = err.Error(); return r }
	up, err := startMosquitto(o.mosquitto, filepath.Join(dir, "upstream"), o.host, o.mosqInflight)
	if err != nil {
		return fail(fmt.Errorf("upstream: %w", err))
	}
	defer up.stop()
	pport, err := freePort(o.host)
	if err != nil {
		return fail(err)
	}
	px, err := newProxy(fmt.Sprintf("%s:%d", o.host, pport), up.addr)
	if err != nil {
		return fail(err)
	}
	defer px.cut()
	gw, err := startGateway(o.gateway, filepath.Join(dir, "gateway"), o.host, gatewaySpec{upstream: px.addr, forward: "drain/#"})
	if err != nil {
		return fail(err)
	}
	defer gw.stop()
	// The upstream subscriber that checks delivery is away while the
	// gateway drains (unless --drain-live-subscriber): its persistent
	// session (clean session off) makes mosquitto keep every message for
	// it, and it collects them after the drain. The drain measures how fast
	// the gateway empties its buffer into the upstream broker; on a site,
	// that broker and its consumers run elsewhere, while here a live
	// subscriber and mosquitto's deliveries to it would take a share of the
	// two cores the gateway runs on.
	upTr := newTracker()
	subOpts := dialOpts{addr: up.addr, clientID: "drain-upstream", clean: false, recv: upTr}
	if err := persistentSubscription(ctx, subOpts, "sites/bench/drain/#"); err != nil {
		return fail(fmt.Errorf("upstream subscriber: %w", err))
	}

	// Fill.
	_, idleHWM, _ := procMem(gw.p.pid())
	rs := sampleRSS(gw.p.pid(), 100*time.Millisecond)
	spec := loadSpec{pubs: o.ingestPubs, window: ingestInflight / o.ingestPubs, qos: 1, messages: o.drainMessages, payload: o.payload, topic: "drain"}
	r.Publishers, r.Window = spec.pubs, spec.window
	run, err := drive(ctx, gw.addr, spec, "fill")
	fillPeak := rs.finish()
	if err != nil {
		return fail(fmt.Errorf("fill: %w%s", err, gw.diagnose()))
	}
	r.Published, r.Acked = run.published, run.acked
	r.Expected = run.acked
	r.Extra = map[string]float64{"idle_hwm_bytes": float64(idleHWM), "fill_peak_rss_bytes": float64(fillPeak)}
	if el := run.lastAck.Sub(run.start).Seconds(); el > 0 {
		r.Extra["fill_rate_per_s"] = float64(run.acked) / el
	}
	m, err := gw.metrics()
	if err != nil {
		return fail(err)
	}
	// The drain is timed by the gateway's metrics.
	backlog, _, ok := metricValue(m, metricBacklog, hintBacklog)
	if !ok {
		return fail(errors.New("no backlog metric (" + metricBacklog + ") on /metrics"))
	}
	r.Extra["backlog_before"] = backlog
	if _, _, ok := metricValue(m, metricForwarded, hintForwarded); !ok {
		return fail(errors.New("no forwarded metric (" + metricForwarded + ") on /metrics"))
	}

	// Drain: from the gateway's connection through the link until the
	// upstream acknowledged every message (the gateway's forwarded counter
	// reaches the fill and its backlog is empty), polled every 50 ms. The
	// machine's CPU goes to the gateway, the upstream mosquitto and this
	// process (the link proxy, the polling and a live subscriber): all
	// three are measured.
	r.Note = "the upstream subscriber collected the messages after the drain (--drain-live-subscriber: during it)"
	var upSub *client
	if o.drainLive {
		r.Note = "the upstream subscriber received the messages during the drain, on the same cores"
		if upSub, err = dial(ctx, subOpts); err != nil {
			return fail(fmt.Errorf("upstream subscriber: %w", err))
		}
		defer upSub.close()
	}
	cpu0, _ := gw.cpuSeconds()
	upCPU0, _ := up.cpuSeconds()
	selfCPU0 := selfCPU()
	rs = sampleRSS(gw.p.pid(), 100*time.Millisecond)
	t0 := time.Now()
	if err := px.join(); err != nil {
		rs.finish()
		return fail(err)
	}
	var end time.Time
	fwd, err := waitProgress(ctx, 50*time.Millisecond, o.idle*3, func() (float64, bool, error) {
		m, err := gw.metrics()
		if err != nil {
			return 0, false, err
		}
		fwd, _, _ := metricValue(m, metricForwarded, hintForwarded)
		left, _, _ := metricValue(m, metricBacklog, hintBacklog)
		return fwd, fwd >= float64(run.acked) && left == 0, nil
	})
	if err != nil {
		r.Error = fmt.Sprintf("drain: %.0f of %d forwarded: %v", fwd, run.acked, err)
	} else {
		end = time.Now()
	}
	drainPeak := rs.finish()
	if _, hwm, err := procMem(gw.p.pid()); err == nil {
		r.Extra["hwm_bytes"] = float64(hwm)
	}
	r.PeakRSS = max(drainPeak, fillPeak)
	r.Extra["drain_peak_rss_bytes"] = float64(drainPeak)
	cpu1, _ := gw.cpuSeconds()
	r.CPUSeconds = cpu1 - cpu0
	upCPU1, upErr := up.cpuSeconds()
	selfCPU1 := selfCPU()
	if connected := px.connectedAt(); !end.IsZero() && !connected.IsZero() {
		r.Extra["reconnect_s"] = connected.Sub(t0).Seconds()
		if el := end.Sub(connected).Seconds(); el > 0 {
			r.Seconds = el
			r.Rate = float64(run.acked) / el
		}
		if upErr == nil && run.acked > 0 {
			r.Extra["upstream_cpu_s_per_msg"] = (upCPU1 - upCPU0) / float64(run.acked)
		}
		if run.acked > 0 {
			r.Extra["bench_cpu_s_per_msg"] = (selfCPU1 - selfCPU0) / float64(run.acked)
		}
	}

	// Delivery: the subscriber comes back for what mosquitto kept for it.
	if upSub == nil {
		if upSub, err = dial(ctx, subOpts); err != nil {
			return fail(fmt.Errorf("upstream subscriber: %w", err))
		}
		defer upSub.close()
	}
	if r.Error == "" {
		n, err := waitProgress(ctx, 20*time.Millisecond, o.idle*3, func() (float64, bool, error) {
			n := upTr.unique.Load()
			return float64(n), n >= run.acked, nil
		})
		if err != nil {
			r.Error = fmt.Sprintf("upstream subscriber: %.0f of %d received: %v", n, run.acked, err)
		}
	}
	r.Delivered, r.Duplicates = upTr.unique.Load(), upTr.dups.Load()
	if r.Expected > 0 {
		r.DeliveryRatio = float64(r.Delivered) / float64(r.Expected)
	}
	if run.acked > 0 {
		r.CPUPerMsg = r.CPUSeconds / float64(run.acked)
	}
	return r
}

// waitProgress calls probe every period until it reports done or an
// error. It gives up when the progress probe reports has not changed for
// stall, or when ctx ends. It returns the last progress.
func waitProgress(ctx context.Context, every, stall time.Duration, probe func() (progress float64, done bool, err error)) (float64, error) {
	last, since := math.Inf(-1), time.Now()
	for {
		n, done, err := probe()
		if err != nil || done {
			return n, err
		}
		if n != last {
			last, since = n, time.Now()
		} else if time.Since(since) > stall {
			return n, fmt.Errorf("stalled for %s", stall)
		}
		if waitCtx(ctx, every) != nil {
			return n, errors.New("interrupted")
		}
	}
}

// persistentSubscription makes the session of a subscriber that is away:
// it connects without a clean session, subscribes at QoS 1 and disconnects.
func persistentSubscription(ctx context.Context, o dialOpts, filter string) error {
	c, err := dial(ctx, o)
	if err != nil {
		return err
	}
	defer c.close()
	return c.subscribe(filter, 1)
}

// idleRSS starts a target with nothing to do and reads its RSS after settle.
func idleRSS(ctx context.Context, o *options, kind, dir string) result {
	r := result{Scenario: "idle", Target: kind}
	b, err := startTarget(o, kind, dir, gatewaySpec{})
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer b.stop()
	if waitCtx(ctx, o.settle) != nil {
		r.Error = "interrupted"
		return r
	}
	rss, _, err := procMem(b.p.pid())
	if err != nil {
		r.Error = err.Error()
	}
	r.PeakRSS = rss
	return r
}

// startTarget starts a fresh broker of kind in dir.
func startTarget(o *options, kind, dir string, s gatewaySpec) (*broker, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("target dir: %w", err)
	}
	if kind == "mosquitto" {
		return startMosquitto(o.mosquitto, dir, o.host, o.mosqInflight)
	}
	return startGateway(o.gateway, dir, o.host, s)
}
