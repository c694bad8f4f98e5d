package devices

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// fakePub records published messages.
type fakePub struct {
	mu   sync.Mutex
	msgs []Message
	fail error
}

func (p *fakePub) Publish(ctx context.Context, m Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail != nil {
		return p.fail
	}
	m.Payload = slices.Clone(m.Payload)
	p.msgs = append(p.msgs, m)
	return nil
}

// take returns and forgets the messages published so far.
func (p *fakePub) take() []Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.msgs
	p.msgs = nil
	return m
}

// lines renders messages as "topic payload" for compact comparisons.
func lines(ms []Message) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Topic+" "+string(m.Payload))
	}
	return out
}

// fakeSub records subscriptions; deliver calls the matching callback.
type fakeSub struct {
	mu   sync.Mutex
	subs map[string]func(Message)
}

func (s *fakeSub) Subscribe(filter string, fn func(Message)) (func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.subs == nil {
		s.subs = map[string]func(Message){}
	}
	s.subs[filter] = fn
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.subs, filter)
	}, nil
}

// deliver calls every subscription whose filter matches m.Topic ('+'
// matches one level).
func (s *fakeSub) deliver(m Message) error {
	s.mu.Lock()
	var fns []func(Message)
	for f, fn := range s.subs {
		if filterMatches(f, m.Topic) {
			fns = append(fns, fn)
		}
	}
	s.mu.Unlock()
	if len(fns) == 0 {
		return fmt.Errorf("no subscription for %s", m.Topic)
	}
	for _, fn := range fns {
		fn(m)
	}
	return nil
}

func filterMatches(filter, topic string) bool {
	f, t := strings.Split(filter, "/"), strings.Split(topic, "/")
	if len(f) != len(t) {
		return false
	}
	for i := range f {
		if f[i] != "+" && f[i] != t[i] {
			return false
		}
	}
	return true
}

func (s *fakeSub) filters() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var f []string
	for k := range s.subs {
		f = append(f, k)
	}
	slices.Sort(f)
	return f
}

// fakeDriver hands out fakeConns whose values and failures the test sets.
type fakeDriver struct {
	mu       sync.Mutex
	values   map[string]any   // point name → raw value
	pointErr map[string]error // point name → read error
	pollErr  error            // whole-poll failure
	openErr  error
	noWrite  bool // SupportsWrite returns false
	writeErr error
	opens    int
	closes   int
	polls    []pollRecord
	writes   []string
	stream   bool
	emit     chan []Reading // for stream conns
}

type pollRecord struct {
	at     time.Time
	points []string
}

func newFakeDriver() *fakeDriver {
	return &fakeDriver{values: map[string]any{}, pointErr: map[string]error{}}
}

func (d *fakeDriver) SupportsWrite() bool { return !d.noWrite }

func (d *fakeDriver) set(f func(d *fakeDriver)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f(d)
}

func (d *fakeDriver) Open(dev *Device) (Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.opens++
	if d.openErr != nil {
		return nil, d.openErr
	}
	if d.stream {
		return &fakeStream{d: d}, nil
	}
	return &fakeConn{d: d}, nil
}

type fakeConn struct{ d *fakeDriver }

func (c *fakeConn) Close() error {
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	c.d.closes++
	return nil
}

func (c *fakeConn) Poll(ctx context.Context, pts []*Point) ([]Reading, error) {
	d := c.d
	d.mu.Lock()
	defer d.mu.Unlock()
	rec := pollRecord{at: time.Now()}
	for _, p := range pts {
		rec.points = append(rec.points, p.Name())
	}
	d.polls = append(d.polls, rec)
	if d.pollErr != nil {
		return nil, d.pollErr
	}
	out := make([]Reading, len(pts))
	for i, p := range pts {
		out[i] = Reading{Point: p, Time: time.Now()}
		if err := d.pointErr[p.Name()]; err != nil {
			out[i].Err = err
			continue
		}
		out[i].Value = d.values[p.Name()]
	}
	return out, nil
}

func (c *fakeConn) Write(ctx context.Context, p *Point, v any) error {
	d := c.d
	d.mu.Lock()
	defer d.mu.Unlock()
	d.writes = append(d.writes, fmt.Sprintf("%s=%T(%v)", p.Name(), v, v))
	if d.writeErr != nil {
		return d.writeErr
	}
	d.values[p.Name()] = v
	return nil
}

type fakeStream struct{ d *fakeDriver }

func (s *fakeStream) Close() error { return (&fakeConn{d: s.d}).Close() }

func (s *fakeStream) Stream(ctx context.Context, emit func([]Reading)) error {
	s.d.mu.Lock()
	ch := s.d.emit
	s.d.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return nil
		case rs, ok := <-ch:
			if !ok {
				return errors.New("unplugged")
			}
			emit(rs)
		}
	}
}
