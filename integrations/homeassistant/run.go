package homeassistant

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/fieldgate/fieldgate/devices"
)

// RunOptions wire a Runner to the local broker.
type RunOptions struct {
	// Publisher publishes on the local broker (retained discovery and
	// availability messages). Required.
	Publisher devices.Publisher
	// Subscriber delivers Home Assistant's status messages. Required.
	Subscriber devices.Subscriber
	// StateFile remembers which discovery topics hold a retained config, so
	// that entities removed while the gateway was stopped are cleared at the
	// next start. Empty: only removals by a reload are cleared.
	StateFile string
	// Logger, scoped by the caller; nil discards.
	Logger *slog.Logger
	// RetryAfter is the pause before a failed publish is tried again.
	// Default 10s.
	RetryAfter time.Duration
}

// Runner keeps Home Assistant's retained discovery configs equal to the
// current Plan. Build it with NewRunner, call Run once; Update is safe for
// concurrent use.
type Runner struct {
	opts    RunOptions
	log     *slog.Logger
	updates chan *Plan
	birth   chan struct{}
	running atomic.Bool
}

// NewRunner returns a Runner for plan. It starts nothing.
func NewRunner(plan *Plan, opts RunOptions) (*Runner, error) {
	if plan == nil || opts.Publisher == nil || opts.Subscriber == nil {
		return nil, errors.New("homeassistant: plan, Publisher and Subscriber are required")
	}
	if opts.RetryAfter <= 0 {
		opts.RetryAfter = 10 * time.Second
	}
	r := &Runner{opts: opts, log: opts.Logger, updates: make(chan *Plan, 1), birth: make(chan struct{}, 1)}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.updates <- plan
	return r, nil
}

// Update replaces the plan (after a reload): configs that changed or are new
// are published, configs of entities that are gone are cleared with an empty
// retained message, unchanged ones are left alone. Only the latest plan of
// several quick updates is applied.
func (r *Runner) Update(plan *Plan) {
	for {
		select {
		case r.updates <- plan:
			return
		default:
		}
		select { // replace a plan not yet taken
		case <-r.updates:
		default:
		}
	}
}

// Run publishes the gateway's availability ("online", retained, broker:
// local), clears configs left over from the last run that the plan no longer
// has, publishes every config, and then waits: when Home Assistant announces
// "online" on its status topic every config is sent again; Update applies a
// new plan. When ctx is done Run publishes "offline" on the availability
// topic and returns nil. Nothing is published per poll.
func (r *Runner) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("homeassistant: Run called twice")
	}
	var (
		plan    *Plan
		unsub   func()
		sent    = map[string][]byte{} // local topic → retained payload
		dirty   bool                  // a publish failed: retry
		resend  bool                  // send every config, changed or not
		retry   = time.NewTimer(time.Hour)
		pending = r.loadState()
	)
	retry.Stop()
	defer func() {
		if unsub != nil {
			unsub()
		}
	}()
	for _, t := range pending {
		sent[t] = []byte("?") // unknown content: re-published if still planned
	}
	for {
		select {
		case <-ctx.Done():
			if plan != nil && plan.Availability != "" {
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				if err := r.publish(sctx, plan, plan.Availability, []byte("offline")); err != nil {
					r.log.Warn("publishing the gateway's offline availability failed", "topic", plan.Availability, "err", err)
				}
				cancel()
			}
			return nil
		case next := <-r.updates:
			if plan == nil || next.Status != plan.Status {
				if unsub != nil {
					unsub()
				}
				u, err := r.subscribe(next.Status)
				if err != nil {
					return err
				}
				unsub = u
			}
			if next.Availability != "" && (plan == nil || plan.Availability != next.Availability) {
				if plan != nil && plan.Availability != "" {
					_ = r.publish(ctx, plan, plan.Availability, []byte("offline"))
				}
				if err := r.publish(ctx, next, next.Availability, []byte("online")); err != nil {
					r.log.Warn("publishing the gateway's availability failed", "topic", next.Availability, "err", err)
				}
			}
			plan = next
		case <-r.birth:
			r.log.Info("Home Assistant came online: sending discovery again")
			resend = true
		case <-retry.C:
		}
		dirty = !r.sync(ctx, plan, sent, resend)
		resend = resend && dirty
		if dirty {
			retry.Reset(r.opts.RetryAfter)
		}
	}
}

// subscribe listens for Home Assistant's birth message. Retained messages
// delivered while subscribing are an old birth, not a new start: ignored.
func (r *Runner) subscribe(topic string) (func(), error) {
	var live atomic.Bool
	unsub, err := r.opts.Subscriber.Subscribe(topic, func(m devices.Message) {
		if live.Load() && string(bytes.TrimSpace(m.Payload)) == "online" {
			select {
			case r.birth <- struct{}{}:
			default:
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("homeassistant: subscribe %s: %w", topic, err)
	}
	live.Store(true)
	return unsub, nil
}

// sync makes the retained configs equal to plan: removals first (an entity
// that changes component keeps its unique_id), then new or changed configs,
// or all of them when all is set. It reports whether everything succeeded
// and saves the state file.
func (r *Runner) sync(ctx context.Context, plan *Plan, sent map[string][]byte, all bool) bool {
	ok := true
	want := make(map[string]bool, len(plan.Messages))
	for _, m := range plan.Messages {
		want[m.Topic] = true
	}
	var cleared, published int
	for _, t := range slices.Sorted(maps.Keys(sent)) {
		if want[t] {
			continue
		}
		if err := r.publish(ctx, plan, t, nil); err != nil {
			r.log.Warn("clearing a discovery config failed", "topic", t, "err", err)
			ok = false
			continue
		}
		delete(sent, t)
		cleared++
	}
	for _, m := range plan.Messages {
		if !all && bytes.Equal(sent[m.Topic], m.Payload) {
			continue
		}
		if err := r.publish(ctx, plan, m.Topic, m.Payload); err != nil {
			r.log.Warn("publishing a discovery config failed", "topic", m.Topic, "err", err)
			ok = false
			continue
		}
		sent[m.Topic] = m.Payload
		published++
	}
	if cleared+published > 0 {
		r.log.Info("Home Assistant discovery sent", "published", published, "cleared", cleared, "entities", len(plan.Messages))
		r.saveState(sent)
	}
	return ok
}

func (r *Runner) publish(ctx context.Context, plan *Plan, topic string, payload []byte) error {
	return r.opts.Publisher.Publish(ctx, devices.Message{Topic: topic, Payload: payload, QoS: plan.QoS, Retain: true})
}

type state struct {
	Topics []string `json:"topics"` // local topics holding a retained config
}

func (r *Runner) loadState() []string {
	if r.opts.StateFile == "" {
		return nil
	}
	data, err := os.ReadFile(r.opts.StateFile)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			r.log.Warn("reading the discovery state failed; configs removed while stopped stay retained", "err", err)
		}
		return nil
	}
	var s state
	if err := json.Unmarshal(data, &s); err != nil {
		r.log.Warn("discovery state file is corrupt; configs removed while stopped stay retained", "file", r.opts.StateFile, "err", err)
		return nil
	}
	return s.Topics
}

// saveState writes the state file atomically (temp file, fsync, rename).
func (r *Runner) saveState(sent map[string][]byte) {
	if r.opts.StateFile == "" {
		return
	}
	data, _ := json.Marshal(state{Topics: slices.Sorted(maps.Keys(sent))})
	if err := writeFileAtomic(r.opts.StateFile, data); err != nil {
		r.log.Warn("saving the discovery state failed", "err", err)
	}
}

func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".ha-state-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
