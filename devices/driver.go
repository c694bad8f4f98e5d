package devices

import (
	"context"
	"time"
)

// Driver opens devices of one kind (modbus, serial, sim). The gateway builds
// the table of drivers as a plain map keyed by the `driver:` config value.
// A Driver is safe for concurrent use; it may share resources (a serial bus)
// between the devices it opens.
type Driver interface {
	// Open prepares a device for I/O. It must not block on the device: a
	// port that is missing now is retried by the returned Conn, not here.
	// Config problems are returned as errors.
	Open(dev *Device) (Conn, error)
}

// Conn is one open device. The Poller that opened it calls Close once.
// A Conn implements Poller (polled devices) or Streamer (devices that push
// data), and optionally Writer.
type Conn interface {
	Close() error
}

// PollConn is a Conn that is read on a schedule set by the devices package.
type PollConn interface {
	Conn
	// Poll reads the given points once and returns one Reading per point,
	// in the same order. A point that could not be read has Err set (and
	// no Value); an error that affects the whole device (port gone,
	// timeout of every request) may be returned instead. Poll never
	// blocks past ctx.
	Poll(ctx context.Context, points []*Point) ([]Reading, error)
}

// StreamConn is a Conn that pushes readings as they arrive.
type StreamConn interface {
	Conn
	// Stream blocks until ctx is done or the device fails, calling emit for
	// every batch of readings. A returned error marks the device
	// unavailable; the caller reopens it with backoff by calling Stream again.
	Stream(ctx context.Context, emit func([]Reading)) error
}

// WriteConn is a Conn whose writable points accept values.
type WriteConn interface {
	Conn
	// Write encodes v with the point's codec and writes it. v is one of
	// bool, int64, uint64, float64 or string, already validated against
	// the point's type, limits and scale (Write receives the raw value,
	// i.e. (engineering value - offset) / scale).
	Write(ctx context.Context, p *Point, v any) error
}

// Reading is one sampled value of one point.
type Reading struct {
	Point *Point
	// Value is the raw decoded value before scale/offset: bool, int64,
	// uint64, float64 or string. Nil when Err is set.
	Value any
	// Time is when the value was sampled (for Modbus: when the response
	// arrived). Never the publish time.
	Time time.Time
	// Err is set when the point could not be read; the point is then
	// published as unavailable, never with a stale value (G6).
	Err error
	// Quality is QualityGood (the zero value) unless the driver knows
	// better. Ignored when Err is set.
	Quality Quality
}

// Quality qualifies a Reading that has a Value. The zero value is good.
type Quality uint8

const (
	// QualityGood is a plain successful sample.
	QualityGood Quality = iota
	// QualityUncertain marks a value the driver read but does not fully
	// trust (a sensor that reports a warning flag, a value from a stale
	// cache). It is published with "quality":"uncertain".
	QualityUncertain
	// QualityBad marks a value read successfully but outside the point's
	// plausible range (`valid:`); it is published with "quality":"bad"
	// and its value, so the wrong number can be seen. Drivers do not set it.
	QualityBad
)

// String returns the name used in payloads: "good", "uncertain" or "bad".
func (q Quality) String() string {
	switch q {
	case QualityUncertain:
		return "uncertain"
	case QualityBad:
		return "bad"
	}
	return "good"
}

// DeviceValidator is an optional interface of a Driver: Validate calls
// ValidateDevice for every device of that driver, with defaults applied
// (DeviceConfig.Defaults), and reports the returned problems with their
// Path prefixed by the device's position ("points[5].address" becomes
// "[2].points[5].address"). Paths are relative to the device.
type DeviceValidator interface {
	ValidateDevice(cfg *DeviceConfig) []*FieldError
}

// WriteSupporter is an optional interface of a Driver. A driver that
// implements it and returns false never accepts writes: Validate rejects
// `writable: true` on its points. Drivers that do not implement it are
// assumed to accept writes where their Conn implements WriteConn (and
// check per-point writability in ValidateDevice).
type WriteSupporter interface {
	SupportsWrite() bool
}
