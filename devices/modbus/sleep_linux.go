package modbus

import (
	"time"

	"golang.org/x/sys/unix"
)

// shortSleep sleeps d (at most a few milliseconds) with nanosleep(2). The Go
// runtime's timers wake with up to ~1 ms of slack on Linux, which would add
// most of a millisecond to every t3.5 wait at high baud rates; blocking the
// bus owner's thread this briefly is cheaper.
func shortSleep(d time.Duration) {
	ts := unix.NsecToTimespec(int64(d))
	for unix.Nanosleep(&ts, &ts) == unix.EINTR {
	}
}
