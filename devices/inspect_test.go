package devices

import (
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// The console's view of a Set: each point's topic, and each device's last
// error in words with its time.
func TestInspect(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		drv := newFakeDriver()
		drv.values["a"], drv.values["b"] = 1.0, 2.0
		h := start(t, drv, DeviceConfig{Name: "d", Driver: "fake", Topic: "g/{device}/{point}", Poll: time.Second,
			Points: []PointConfig{{Name: "a"}, {Name: "b", Topic: "other/{point}"}}})
		defer h.stop()
		devs := h.set.Devices()
		if got := h.set.PointTopic(devs[0].Points[0]); got != "g/d/a" {
			t.Errorf("topic of a: %q", got)
		}
		if got := h.set.PointTopic(devs[0].Points[1]); got != "other/b" {
			t.Errorf("topic of b: %q", got)
		}
		if got := h.set.AvailabilityTopic(devs[0]); got != "g/d/availability" {
			t.Errorf("availability topic: %q", got)
		}
		if got := h.set.PointTopic(&Point{Device: &Device{}}); got != "" {
			t.Errorf("foreign point: %q", got)
		}

		drv.set(func(d *fakeDriver) { d.pointErr["b"] = errors.New("illegal address") })
		advance(time.Second)
		d := h.set.Stats().Devices[0]
		if d.LastError != "point b: illegal address" || !d.LastErrorTime.Equal(h.t0.Add(time.Second)) {
			t.Errorf("after a point failure: %q at %s", d.LastError, d.LastErrorTime)
		}
		drv.set(func(d *fakeDriver) { d.pollErr = errors.New("timeout") })
		advance(time.Second)
		if d := h.set.Stats().Devices[0]; !strings.Contains(d.LastError, "timeout") || d.Online {
			t.Errorf("after a device failure: %+v", d)
		}
	})
}
