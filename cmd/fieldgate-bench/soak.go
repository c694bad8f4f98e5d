package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"time"
)

// Soak load: QoS 1 publishers on a forward route (every PUBACKed sequence
// is recorded) plus a QoS 0 local publisher → subscriber pair, each paced.
const (
	soakPubs      = 4
	soakWindow    = 16
	soakRate      = 2000 // QoS 1 publishes/s, all publishers together
	soakLocalRate = 2000 // QoS 0 publishes/s on a local-only topic
	soakWarmup    = time.Minute
)

// rssSample is one per-period reading of the gateway's memory; Gen counts
// the process restarts before it.
type rssSample struct {
	At   float64 `json:"at_s"`
	Age  float64 `json:"age_s"` // since this process started
	RSS  int64   `json:"rss_bytes"`
	Anon int64   `json:"anon_bytes"`      // RssAnon: heap, stacks, allocator slack
	Live int64   `json:"heap_live_bytes"` // go_gc_heap_live_bytes: marked live by the last GC
	Gen  int     `json:"gen"`
}

type soakReport struct {
	Duration      float64     `json:"duration_s"`
	Kills         int         `json:"kills"`
	Flaps         int         `json:"flaps"`
	Published     int64       `json:"published_qos1"`
	Acked         int64       `json:"acked_qos1"`
	Received      int64       `json:"received_upstream_unique"`
	Duplicates    int64       `json:"duplicates_upstream"`
	Missing       int64       `json:"missing_acked"`
	MissingSample []string    `json:"missing_sample,omitempty"`
	LocalSent     int64       `json:"local_qos0_sent"`
	LocalRecv     int64       `json:"local_qos0_received"`
	RSS           []rssSample `json:"rss"`
	RSSSlopeMBh   float64     `json:"rss_slope_mb_per_hour"`
	RSSSlopeN     int         `json:"rss_slope_samples"` // samples past warm-up; the slope needs 3
	RSSNote       string      `json:"rss_note,omitempty"`
	WarmupS       float64     `json:"warmup_s"`
	PeakFirst     memPeak     `json:"first_third"`
	PeakLast      memPeak     `json:"last_third"`
	RSSGrowth     bool        `json:"rss_growth"`
	Pass          bool        `json:"pass"`
	Errors        []string    `json:"errors,omitempty"`
}

// soakPublisher publishes paced QoS 1 messages across gateway restarts,
// reconnecting as needed, and keeps the union of acknowledged seqs.
type soakPublisher struct {
	id    uint32
	acked *tracker
	sent  int64
}

func (sp *soakPublisher) run(ctx context.Context, addr string, qos byte, rate int, topic string) {
	seq := uint32(0)
	perTick := max(rate/100, 1)
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for ctx.Err() == nil {
		c, err := dial(ctx, dialOpts{addr: addr, clientID: fmt.Sprintf("soak-%s-%d", topic, sp.id), clean: true, window: soakWindow})
		if err != nil {
			_ = waitCtx(ctx, 100*time.Millisecond)
			continue
		}
		p := newPublisher(c, sp.id, fmt.Sprintf("%s/p%d", topic, sp.id), qos, 64)
		for err == nil {
			select {
			case <-ctx.Done():
				err = ctx.Err()
				continue
			case <-t.C:
			}
			for range perTick {
				if err = p.publish(seq); err != nil {
					break
				}
				seq++
				sp.sent++
			}
			if err == nil {
				err = c.flush()
			}
		}
		if ctx.Err() != nil && qos > 0 {
			_ = c.waitAcked(soakWindow, 10*time.Second)
		}
		c.abort()
		c.acked.each(func(_, s uint32) { sp.acked.mark(sp.id, s) })
	}
}

// soak runs mixed load against the gateway for o.soakDuration while the
// upstream link flaps and the gateway is killed with SIGKILL and restarted
// on the same data dir; then it checks that every acknowledged message
// arrived upstream and that RSS did not grow.
func soak(ctx context.Context, o *options, dir string, log io.Writer) (*soakReport, error) {
	rep := &soakReport{}
	up, err := startMosquitto(o.mosquitto, filepath.Join(dir, "upstream"), o.host, o.mosqInflight)
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	defer up.stop()
	pport, err := freePort(o.host)
	if err != nil {
		return nil, err
	}
	px, err := newProxy(fmt.Sprintf("%s:%d", o.host, pport), up.addr)
	if err != nil {
		return nil, err
	}
	defer px.cut()
	if err := px.join(); err != nil {
		return nil, err
	}
	gw, err := startGateway(o.gateway, filepath.Join(dir, "gateway"), o.host, gatewaySpec{upstream: px.addr, forward: "soak/#"})
	if err != nil {
		return nil, err
	}
	defer func() { gw.stop() }()

	upTr := newTracker()
	upSub, err := dial(ctx, dialOpts{addr: up.addr, clientID: "soak-upstream", clean: true, recv: upTr})
	if err != nil {
		return nil, err
	}
	defer upSub.close()
	if err := upSub.subscribe("sites/bench/soak/#", 1); err != nil {
		return nil, err
	}

	start := time.Now()
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var wg sync.WaitGroup
	pubs := make([]*soakPublisher, soakPubs)
	for i := range pubs {
		pubs[i] = &soakPublisher{id: uint32(i), acked: newTracker()}
		wg.Go(func() { pubs[i].run(loadCtx, gw.addr, 1, soakRate/soakPubs, "soak") })
	}
	local := &soakPublisher{id: 0, acked: newTracker()}
	localTr := newTracker()
	wg.Go(func() { local.run(loadCtx, gw.addr, 0, soakLocalRate, "local") })
	wg.Go(func() { // the local subscriber reconnects after every kill
		for loadCtx.Err() == nil {
			c, err := dial(loadCtx, dialOpts{addr: gw.addr, clientID: "soak-local-sub", clean: true, recv: localTr})
			if err == nil {
				if err = c.subscribe("local/#", 0); err == nil {
					<-c.done
				}
				c.abort()
			}
			_ = waitCtx(loadCtx, 100*time.Millisecond)
		}
	})

	var mu sync.Mutex // guards gw.p across the killer and the sampler
	gen := 0
	genStart := time.Now()
	var errs []string
	end := start.Add(o.soakDuration)
	sample := time.NewTicker(o.soakSample)
	kill := time.NewTicker(o.soakKill)
	flap := time.NewTicker(o.soakFlap)
	defer sample.Stop()
	defer kill.Stop()
	defer flap.Stop()
	linkUp := true
	record := func() {
		mu.Lock()
		defer mu.Unlock()
		rss, _, err := procMem(gw.p.pid())
		anon, aerr := procAnon(gw.p.pid())
		m, merr := gw.metrics()
		live, ok := m["go_gc_heap_live_bytes"]
		if err == nil && aerr == nil && merr == nil && ok {
			rep.RSS = append(rep.RSS, rssSample{At: time.Since(start).Seconds(), Age: time.Since(genStart).Seconds(), RSS: rss, Anon: anon, Live: int64(live), Gen: gen})
		}
	}
	record()
loop:
	for {
		select {
		case <-ctx.Done():
			errs = append(errs, "interrupted")
			break loop
		case <-time.After(time.Until(end)):
			break loop
		case <-sample.C:
			record()
		case <-flap.C:
			if linkUp {
				px.cut()
			} else if err := px.join(); err != nil {
				errs = append(errs, err.Error())
			}
			linkUp = !linkUp
			rep.Flaps++
			fmt.Fprintf(log, "soak %s: upstream link %s\n", time.Since(start).Round(time.Second), map[bool]string{true: "up", false: "down"}[linkUp])
		case <-kill.C:
			mu.Lock()
			gw.p.kill9()
			rep.Kills++
			err := gw.restart()
			gen++
			genStart = time.Now()
			mu.Unlock()
			fmt.Fprintf(log, "soak %s: kill -9 #%d, restarted\n", time.Since(start).Round(time.Second), rep.Kills)
			if err != nil {
				errs = append(errs, fmt.Sprintf("restart after kill %d: %v", rep.Kills, err))
				break loop
			}
		}
	}
	record()
	stopLoad()
	wg.Wait()
	if err := px.join(); err != nil {
		errs = append(errs, err.Error())
	}

	for _, p := range pubs {
		rep.Published += p.sent
		rep.Acked += p.acked.unique.Load()
	}
	rep.LocalSent, rep.LocalRecv = local.sent, localTr.unique.Load()
	// Wait for the backlog: until every acked message is upstream, or no
	// progress for a minute (bounded at 15 minutes).
	missing := func() int64 {
		var n int64
		for _, p := range pubs {
			p.acked.each(func(pub, seq uint32) {
				if !upTr.has(pub, seq) {
					n++
				}
			})
		}
		return n
	}
	fmt.Fprintf(log, "soak: load stopped, waiting for %d acknowledged messages upstream\n", rep.Acked)
	hard := time.Now().Add(15 * time.Minute)
	last, lastChange := int64(-1), time.Now()
	for {
		// upTr is written by upSub's reader; reading the bitmap needs that
		// reader quiet, so compare counts first and the sets only at the end.
		n := upTr.unique.Load()
		if n >= rep.Acked && n == last {
			break
		}
		if n != last {
			last, lastChange = n, time.Now()
		} else if time.Since(lastChange) > time.Minute || time.Now().After(hard) {
			break
		}
		if waitCtx(ctx, 500*time.Millisecond) != nil {
			break
		}
	}
	upSub.close()
	rep.Received, rep.Duplicates = upTr.unique.Load(), upTr.dups.Load()
	rep.Missing = missing()
	if rep.Missing > 0 {
		for _, p := range pubs {
			p.acked.each(func(pub, seq uint32) {
				if !upTr.has(pub, seq) && len(rep.MissingSample) < 20 {
					rep.MissingSample = append(rep.MissingSample, fmt.Sprintf("p%d#%d", pub, seq))
				}
			})
		}
	}
	rep.Duration = time.Since(start).Seconds()
	rep.WarmupS = min(soakWarmup, o.soakKill/3).Seconds()
	judgeMemory(rep)
	rep.Errors = errs
	return rep, nil
}

// judgeMemory decides whether memory grew, from the samples, and sets Pass.
//
// Memory rises and falls by tens of MB with the backlog as the upstream
// flaps (VmRSS counts the store's mapped pages; the live heap holds the
// bridge's read-ahead and in-flight window while a backlog drains), and
// restarts reset it. So neither a slope fitted within 5-minute lifetimes
// (30-minute soaks read 28-66 MB/h that way) nor the live heap's peaks
// (38-63 MB depending on where in a drain a GC fell) show a leak. Two
// figures do: the VmRSS peak, which the memory limit bounds, and the floor
// of the live heap — what the GC finds live when no backlog is held, which
// leaked memory raises. Growth: the last third of the samples (past each
// start's warm-up) has a VmRSS peak more than soakMaxGrowth above the first
// third's, or a live-heap floor more than soakMaxGrowth + 2 MB above it.
// The within-lifetime slope of the live heap is reported for information.
func judgeMemory(rep *soakReport) {
	warm := rep.WarmupS
	if warm == 0 {
		warm = soakWarmup.Seconds() // reports saved before WarmupS existed
	}
	var settled []rssSample
	for _, s := range rep.RSS {
		if s.Age >= warm {
			settled = append(settled, s)
		}
	}
	rep.RSSSlopeN = len(settled)
	rep.RSSGrowth, rep.RSSNote = false, ""
	if len(settled) >= 6 {
		rep.RSSSlopeMBh = pooledSlope(settled)
		third := len(settled) / 3
		rep.PeakFirst, rep.PeakLast = extremes(settled[:third]), extremes(settled[len(settled)-third:])
		rep.RSSGrowth = grew(rep.PeakFirst, rep.PeakLast)
	} else {
		rep.RSSNote = fmt.Sprintf("only %d memory samples past the %.0fs warm-up: growth not judged", len(settled), warm)
	}
	rep.Pass = rep.Missing == 0 && rep.Acked > 0 && !rep.RSSGrowth && len(rep.Errors) == 0
}

// memPeak is the highest VmRSS and the lowest live heap among some samples.
type memPeak struct {
	RSS       int64 `json:"rss_peak_bytes"`
	LiveFloor int64 `json:"heap_live_floor_bytes"`
}

// soakMaxGrowth is how much higher (fraction) the last third may be.
const soakMaxGrowth = 0.25

func extremes(s []rssSample) memPeak {
	p := memPeak{LiveFloor: -1}
	for _, x := range s {
		p.RSS = max(p.RSS, x.RSS)
		if p.LiveFloor < 0 || x.Live < p.LiveFloor {
			p.LiveFloor = x.Live
		}
	}
	return p
}

func grew(first, last memPeak) bool {
	return float64(last.RSS) > (1+soakMaxGrowth)*float64(first.RSS) ||
		float64(last.LiveFloor) > (1+soakMaxGrowth)*float64(first.LiveFloor)+2<<20
}

// pooledSlope fits the live heap against time within each process
// generation (a restart resets it, which is not growth) and returns the
// common slope in MB per hour; 0 when no generation has two samples.
func pooledSlope(s []rssSample) float64 {
	type acc struct{ n, st, sy float64 }
	means := map[int]*acc{}
	for _, x := range s {
		a := means[x.Gen]
		if a == nil {
			a = &acc{}
			means[x.Gen] = a
		}
		a.n++
		a.st += x.At / 3600
		a.sy += mb(x.Live)
	}
	var num, den float64
	for _, x := range s {
		a := means[x.Gen]
		dt := x.At/3600 - a.st/a.n
		num += dt * (mb(x.Live) - a.sy/a.n)
		den += dt * dt
	}
	if den == 0 {
		return 0
	}
	return num / den
}

func printSoak(w io.Writer, r *soakReport) {
	if r == nil {
		fmt.Fprintln(w, "soak: did not start")
		return
	}
	fmt.Fprintf(w, "soak %.0fs: %d kill -9, %d upstream flaps\n", r.Duration, r.Kills, r.Flaps)
	fmt.Fprintf(w, "  QoS 1 forward: published %d, acked %d, upstream unique %d, duplicates %d, MISSING %d\n",
		r.Published, r.Acked, r.Received, r.Duplicates, r.Missing)
	if len(r.MissingSample) > 0 {
		fmt.Fprintf(w, "  missing (first %d): %v\n", len(r.MissingSample), r.MissingSample)
	}
	fmt.Fprintf(w, "  QoS 0 local: sent %d, received %d (QoS 0 across kills may lose)\n", r.LocalSent, r.LocalRecv)
	fmt.Fprintf(w, "  memory per process lifetime (VmRSS / RssAnon / live heap, min–max MB):")
	for i := 0; i < len(r.RSS); {
		j, g := i, r.RSS[i].Gen
		x := r.RSS[i]
		rmin, rmax, amin, amax, lmin, lmax := x.RSS, x.RSS, x.Anon, x.Anon, x.Live, x.Live
		for ; j < len(r.RSS) && r.RSS[j].Gen == g; j++ {
			y := r.RSS[j]
			rmin, rmax = min(rmin, y.RSS), max(rmax, y.RSS)
			amin, amax = min(amin, y.Anon), max(amax, y.Anon)
			lmin, lmax = min(lmin, y.Live), max(lmax, y.Live)
		}
		fmt.Fprintf(w, "\n    g%d: %.0f–%.0f / %.0f–%.0f / %.1f–%.1f", g, mb(rmin), mb(rmax), mb(amin), mb(amax), mb(lmin), mb(lmax))
		i = j
	}
	if r.RSSNote != "" {
		fmt.Fprintf(w, "\n  RSS: %s\n", r.RSSNote)
	} else {
		fmt.Fprintf(w, "\n  past warm-up, first third → last third: VmRSS peak %.1f → %.1f MB, live heap floor %.1f → %.1f MB (growth above +%.0f%%)\n",
			mb(r.PeakFirst.RSS), mb(r.PeakLast.RSS), mb(r.PeakFirst.LiveFloor), mb(r.PeakLast.LiveFloor), 100*soakMaxGrowth)
		fmt.Fprintf(w, "  live heap slope within process lifetimes (%d samples, for information): %.1f MB/h\n", r.RSSSlopeN, r.RSSSlopeMBh)
	}
	for _, e := range r.Errors {
		fmt.Fprintln(w, "  error:", e)
	}
	fmt.Fprintf(w, "  result: %s\n", map[bool]string{true: "PASS", false: "FAIL"}[r.Pass])
}
