package devices

import (
	"sync/atomic"
	"time"
)

// PointTopic returns the topic that point p of the Set publishes on ("" if
// p is not one of the Set's points). Its write requests go to the topic
// plus "/set".
func (s *Set) PointTopic(p *Point) string {
	for _, r := range s.runners {
		if r.dev == p.Device && p.Index < len(r.points) {
			return r.points[p.Index].topic
		}
	}
	return ""
}

// AvailabilityTopic returns the topic on which device d publishes
// online/offline ("" if d is not one of the Set's devices).
func (s *Set) AvailabilityTopic(d *Device) string {
	for _, r := range s.runners {
		if r.dev == d {
			return r.availTopic
		}
	}
	return ""
}

// lastError is the most recent failure of a device, for DeviceStats.
type lastError struct {
	msg string
	at  time.Time
}

// noteError records err as the device's last error.
func noteError(p *atomic.Pointer[lastError], err error, at time.Time) {
	p.Store(&lastError{msg: err.Error(), at: at})
}
