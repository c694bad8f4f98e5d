//go:build !linux

package modbus

import "time"

// shortSleep sleeps d (at most a few milliseconds).
func shortSleep(d time.Duration) { time.Sleep(d) }
