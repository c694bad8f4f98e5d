package devices

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// runner owns one device: its Conn, schedule, point states and writes.
type runner struct {
	set        *Set
	dev        *Device
	drv        Driver
	log        *slog.Logger
	points     []*pointState // by Point.Index
	groups     []pollGroup   // points by poll interval, shortest first
	availTopic string
	root       string // the device's topic root: {point} and what follows cut off
	writes     chan writeReq

	mu     sync.Mutex // guards avail and the states in points
	avail  availability
	stats  deviceCounters
	pubBad bool // publishing is failing (logged once)
}

type availability int8

const (
	availUnknown availability = iota
	availOnline
	availOffline
)

type deviceCounters struct {
	online        atomic.Bool
	polls         atomic.Uint64
	pollErrors    atomic.Uint64
	readErrors    atomic.Uint64
	published     atomic.Uint64
	publishErrors atomic.Uint64
	writes        atomic.Uint64
	writeErrors   atomic.Uint64
	writesDropped atomic.Uint64
	implausible   atomic.Uint64
	reconnects    atomic.Uint64
	lastSample    atomic.Int64
}

type pollGroup struct {
	every  time.Duration
	points []*Point
}

// pointState is a point's compiled topic and its publishing state.
type pointState struct {
	p      *Point
	topic  string
	qos    byte
	retain bool

	// Guarded by runner.mu.
	fresh   bool      // a value has been published since the point (re)became readable
	last    any       // last published engineering value
	lastQ   Quality   // its quality
	lastPub time.Time // when it was published (Set.now clock)
	lastRaw any       // last raw value read (for write conversion)
	bad     bool      // the last read failed
	outside bool      // the last reading was outside the valid range
}

type writeReq struct {
	ps  *pointState
	msg Message
	// reject, when set, is the answer: the request names a point that
	// does not exist (ps is nil; name and topic say what was asked) or
	// cannot be written.
	reject error
	name   string
	topic  string // the point's topic; the result goes to topic + "/set/result"
}

// run is the device goroutine.
func (r *runner) run(ctx context.Context) {
	backoff := minBackoff
	for ctx.Err() == nil {
		conn, err := r.drv.Open(r.dev)
		if err != nil {
			r.setOffline(ctx, fmt.Errorf("open: %w", err))
		} else {
			wasOnline := false
			err = r.serve(ctx, conn, &wasOnline)
			if cerr := conn.Close(); cerr != nil {
				r.log.Debug("close", "error", cerr)
			}
			if ctx.Err() != nil {
				break
			}
			r.setOffline(ctx, err)
			if wasOnline {
				backoff = minBackoff
			}
		}
		if !r.wait(ctx, backoff) {
			break
		}
		r.stats.reconnects.Add(1)
		backoff = min(2*backoff, maxBackoff)
	}
	// Shutting down: the device is no longer watched.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	r.mu.Lock()
	r.avail = availOffline
	r.mu.Unlock()
	r.stats.online.Store(false)
	r.publish(pctx, Message{Topic: r.availTopic, Payload: []byte("offline"), QoS: 1, Retain: true})
	r.drainWrites(pctx, errors.New("gateway is shutting down"))
}

// wait sleeps for d while answering write requests with an error; it
// returns false when ctx is done.
func (r *runner) wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case w := <-r.writes:
			r.reply(ctx, w, nil, errors.New("device is offline"))
		}
	}
}

func (r *runner) drainWrites(ctx context.Context, err error) {
	for {
		select {
		case w := <-r.writes:
			r.reply(ctx, w, nil, err)
		default:
			return
		}
	}
}

// serve runs an open Conn until ctx is done (nil) or the device fails.
func (r *runner) serve(ctx context.Context, conn Conn, wasOnline *bool) error {
	switch c := conn.(type) {
	case PollConn:
		return r.servePoll(ctx, c, wasOnline)
	case StreamConn:
		return r.serveStream(ctx, c, wasOnline)
	}
	return fmt.Errorf("driver %s returned a %T, which neither polls nor streams", r.dev.Config.Driver, conn)
}

func (r *runner) servePoll(ctx context.Context, pc PollConn, wasOnline *bool) error {
	now := time.Now()
	next := make([]time.Time, len(r.groups))
	for i := range next {
		next[i] = now
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	var due []*Point
	for {
		earliest := next[0]
		for _, t := range next[1:] {
			if t.Before(earliest) {
				earliest = t
			}
		}
		timer.Reset(time.Until(earliest))
		select {
		case <-ctx.Done():
			return nil
		case w := <-r.writes:
			var v any
			err := w.reject
			if err == nil {
				v, err = r.write(ctx, pc, w.ps, w.msg.Payload)
			}
			r.reply(ctx, w, v, err)
			continue
		case <-timer.C:
		}
		now := time.Now()
		due = due[:0]
		for i, g := range r.groups {
			if next[i].After(now) {
				continue
			}
			due = append(due, g.points...)
			next[i] = next[i].Add(g.every)
			if !next[i].After(now) { // overran: skip the missed slots
				next[i] = now.Add(g.every)
			}
		}
		if len(r.groups) > 1 {
			sortPoints(due)
		}
		if err := r.poll(ctx, pc, due); err != nil {
			return err
		}
		*wasOnline = true
	}
}

func sortPoints(ps []*Point) {
	for i := 1; i < len(ps); i++ {
		for j := i; j > 0 && ps[j].Index < ps[j-1].Index; j-- {
			ps[j], ps[j-1] = ps[j-1], ps[j]
		}
	}
}

// poll reads pts once and publishes what changed. An error means the whole
// device failed.
func (r *runner) poll(ctx context.Context, pc PollConn, pts []*Point) error {
	readings, err := pc.Poll(ctx, pts)
	if ctx.Err() != nil {
		return nil // shutting down; whatever happened is not a device fault
	}
	r.stats.polls.Add(1)
	if err == nil && len(readings) != len(pts) {
		err = fmt.Errorf("driver returned %d readings for %d points", len(readings), len(pts))
	}
	if err == nil {
		failed := 0
		for i := range readings {
			if readings[i].Err != nil {
				failed++
			}
		}
		// Every point of the device failing is the device failing; a
		// poll of some points (other intervals not due) that all fail
		// only marks those points bad.
		if failed == len(readings) && failed == len(r.points) {
			err = fmt.Errorf("every point failed: %w", readings[0].Err)
		}
	}
	if err != nil {
		r.stats.pollErrors.Add(1)
		return fmt.Errorf("poll: %w", err)
	}
	for i := range readings {
		if readings[i].Point == nil {
			readings[i].Point = pts[i]
		}
	}
	r.setOnline(ctx)
	r.process(ctx, readings, false)
	return nil
}

// silenceFactor is how many poll intervals a streaming sensor may stay
// silent before it is marked offline.
const silenceFactor = 3

func (r *runner) serveStream(ctx context.Context, sc StreamConn, wasOnline *bool) error {
	done := make(chan error, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	var online atomic.Bool
	// A streaming sensor is expected to send about every poll interval;
	// after silenceFactor intervals without a good reading it is marked
	// offline (its last value is stale), and online again with the next one.
	silence := silenceFactor * r.dev.Config.Poll
	quiet := time.NewTimer(silence)
	defer quiet.Stop()
	heard := make(chan struct{}, 1)
	wg.Go(func() {
		done <- sc.Stream(ctx, func(rs []Reading) {
			good := false
			for i := range rs {
				if rs[i].Point == nil || rs[i].Point.Device != r.dev {
					continue
				}
				if rs[i].Err == nil {
					good = true
				}
			}
			if good {
				r.setOnline(ctx)
				online.Store(true)
				select {
				case heard <- struct{}{}:
				default:
				}
			}
			r.process(ctx, rs, false)
		})
	})
	for {
		select {
		case err := <-done:
			*wasOnline = online.Load()
			if ctx.Err() != nil {
				return nil
			}
			if err == nil {
				err = errors.New("stream ended")
			}
			return fmt.Errorf("stream: %w", err)
		case w := <-r.writes:
			r.reply(ctx, w, nil, errors.New("device streams its readings and accepts no writes"))
		case <-heard:
			if !quiet.Stop() {
				select {
				case <-quiet.C:
				default:
				}
			}
			quiet.Reset(silence)
		case <-quiet.C:
			r.setOffline(ctx, fmt.Errorf("no reading for %s (%d× poll)", silence, silenceFactor))
			quiet.Reset(silence)
		}
	}
}

// setOnline marks the device online, publishing and logging on change.
func (r *runner) setOnline(ctx context.Context) {
	r.mu.Lock()
	changed := r.avail != availOnline
	r.avail = availOnline
	r.mu.Unlock()
	if !changed {
		return
	}
	r.stats.online.Store(true)
	r.log.Info("device online")
	r.publish(ctx, Message{Topic: r.availTopic, Payload: []byte("online"), QoS: 1, Retain: true})
}

// setOffline marks the device offline, publishing and logging on change;
// every point must then be read afresh before it is published again.
func (r *runner) setOffline(ctx context.Context, cause error) {
	r.mu.Lock()
	changed := r.avail != availOffline
	r.avail = availOffline
	for _, ps := range r.points {
		ps.fresh = false
		ps.bad = false
	}
	r.mu.Unlock()
	if !changed {
		r.log.Debug("device still offline", "error", cause)
		return
	}
	r.stats.online.Store(false)
	if hint := PortHint(cause); hint != "" && !strings.Contains(cause.Error(), hint) {
		r.log.Warn("device offline", "error", cause, "hint", hint)
	} else {
		r.log.Warn("device offline", "error", cause)
	}
	r.publish(ctx, Message{Topic: r.availTopic, Payload: []byte("offline"), QoS: 1, Retain: true})
}

// process applies scale/offset, deadband and heartbeat to readings and
// publishes. force publishes good values regardless of deadband (write
// confirmations).
func (r *runner) process(ctx context.Context, readings []Reading, force bool) {
	now := r.set.now()
	unsynced := r.set.opts.ClockSynced != nil && !r.set.opts.ClockSynced()
	for i := range readings {
		rd := &readings[i]
		if rd.Point == nil || rd.Point.Device != r.dev || rd.Point.Index >= len(r.points) {
			continue
		}
		ps := r.points[rd.Point.Index]
		ts := rd.Time
		if ts.IsZero() {
			ts = now
		}
		if unsynced && rd.Quality == QualityGood {
			rd.Quality = QualityUncertain // the sample time cannot be trusted
		}
		cfg := &ps.p.Config
		var eng any
		err := rd.Err
		if err == nil {
			eng, err = engineering(rd.Value, cfg)
		}
		if err != nil {
			r.pointBad(ctx, ps, ts, err)
			continue
		}
		r.checkPlausible(ps, eng, rd)
		r.mu.Lock()
		ps.lastRaw = rd.Value
		publish := force || !ps.fresh || ps.bad || rd.Quality != ps.lastQ ||
			changedEnough(ps.last, eng, cfg) ||
			(cfg.heartbeat() > 0 && now.Sub(ps.lastPub) >= cfg.heartbeat())
		recovered := ps.bad
		r.mu.Unlock()
		if recovered {
			r.log.Info("point readable again", "point", ps.p.Name())
		}
		if !publish {
			continue
		}
		payload := valuePayload(r.dev.Config.Payload, eng, cfg.Unit, ts, rd.Quality)
		if !r.publish(ctx, Message{Topic: ps.topic, Payload: payload, QoS: ps.qos, Retain: ps.retain}) {
			continue // try again on the next reading
		}
		r.stats.lastSample.Store(ts.UnixNano())
		r.mu.Lock()
		ps.fresh, ps.bad = true, false
		ps.last, ps.lastQ, ps.lastPub = eng, rd.Quality, now
		r.mu.Unlock()
	}
}

// pointBad handles a point whose read failed: nothing that looks like a
// value is published (G6). With json payloads a value-less
// {"quality":"bad",…} is published once, when the point turns bad.
func (r *runner) pointBad(ctx context.Context, ps *pointState, ts time.Time, err error) {
	r.stats.readErrors.Add(1)
	r.mu.Lock()
	changed := !ps.bad
	ps.bad = true
	ps.fresh = false
	r.mu.Unlock()
	if !changed {
		return
	}
	r.log.Warn("point unreadable", "point", ps.p.Name(), "error", err)
	if r.dev.Config.Payload == "json" {
		r.publish(ctx, Message{Topic: ps.topic, Payload: badPayload(ps.p.Config.Unit, ts, err), QoS: ps.qos, Retain: ps.retain})
	}
}

// publish sends m, counting and logging failures once per failing streak.
func (r *runner) publish(ctx context.Context, m Message) bool {
	err := r.set.opts.Publisher.Publish(ctx, m)
	r.mu.Lock()
	wasBad := r.pubBad
	r.pubBad = err != nil
	r.mu.Unlock()
	if err != nil {
		r.stats.publishErrors.Add(1)
		if !wasBad && ctx.Err() == nil {
			r.log.Warn("publish failed", "topic", m.Topic, "error", err)
		}
		return false
	}
	if wasBad {
		r.log.Info("publishing again")
	}
	r.stats.published.Add(1)
	return true
}
