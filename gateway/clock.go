package gateway

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// clockCheckInterval is how often the system clock's NTP state is read.
const clockCheckInterval = 30 * time.Second

// clockWatch caches whether the system clock is synchronised, so that the
// devices can mark readings cheaply on every poll. A Pi has no RTC: until
// NTP syncs after boot its clock can be days off, and so would every
// reading's sample time.
type clockWatch struct {
	synced atomic.Bool
	known  atomic.Bool // a check has run
}

// check reads the clock state once and logs when it changed.
func (c *clockWatch) check(log *slog.Logger) {
	ok, err := ClockSynchronized()
	if err != nil {
		ok = true // unknown: do not mark readings on a guess
	}
	prev, known := c.synced.Swap(ok), c.known.Swap(true)
	switch {
	case known && prev == ok:
	case ok && known:
		log.Info("system clock synchronised; readings are no longer marked uncertain")
	case !ok:
		log.Warn("system clock is not synchronised (no NTP yet?): readings are marked \"quality\":\"uncertain\" until it is")
	}
}

// run re-checks every clockCheckInterval until ctx is done.
func (c *clockWatch) run(ctx context.Context, log *slog.Logger) {
	t := time.NewTicker(clockCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.check(log)
		}
	}
}
