package devices

import (
	"slices"
	"time"
)

// Defaults used when a key is absent (zero). They are documented on the
// DeviceConfig fields and applied in one place, Defaults.
const (
	DefaultTopic         = "{gateway}/{device}/{point}"
	DefaultPoll          = 5 * time.Second
	DefaultSimPoll       = time.Second
	DefaultTimeout       = time.Second
	DefaultRetries       = 1
	DefaultQoS           = 1
	DefaultPayload       = "json"
	DefaultBaud          = 9600
	DefaultTerminator    = "\n"
	DefaultMaxLineLength = 1024
	DefaultSimPeriod     = time.Minute
	DefaultModbusUnit    = 1
	DefaultMaxGap        = 10
)

// Defaults fills every absent (zero) key of c with its default and copies the
// device-level publishing defaults (poll, heartbeat, qos, retain, topic) into
// points that do not override them. It never writes through the pointers or
// slices it was given: c.Points is replaced by a copy, so a DeviceConfig
// decoded by the gateway can be defaulted without changing the original.
// Defaults is idempotent. Negative or otherwise invalid values are left for
// Validate to report.
func (c *DeviceConfig) Defaults() {
	if c.Poll == 0 {
		c.Poll = DefaultPoll
		if c.Driver == "sim" {
			c.Poll = DefaultSimPoll
		}
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Retries == nil {
		c.Retries = ptr(DefaultRetries)
	}
	if c.QoS == nil {
		c.QoS = ptr(DefaultQoS)
	}
	if c.Retain == nil {
		c.Retain = ptr(false)
	}
	if c.Payload == "" {
		c.Payload = DefaultPayload
	}
	if c.Topic == "" {
		c.Topic = DefaultTopic
	}
	if (c.Port != "" || c.USB != nil) && c.Driver != "sim" {
		if c.Baud == 0 {
			c.Baud = DefaultBaud
		}
		if c.DataBits == 0 {
			c.DataBits = 8
		}
		if c.Parity == "" {
			c.Parity = "N"
		}
		if c.StopBits == 0 {
			c.StopBits = 1
		}
	}
	switch c.Driver {
	case "serial":
		if c.Terminator == "" {
			c.Terminator = DefaultTerminator
		}
		if c.MaxLineLength == 0 {
			c.MaxLineLength = DefaultMaxLineLength
		}
	case "modbus":
		if c.Unit == nil {
			c.Unit = ptr(DefaultModbusUnit)
		}
		if c.MaxGap == nil {
			c.MaxGap = ptr(DefaultMaxGap)
		}
	}
	c.Points = slices.Clone(c.Points)
	for i := range c.Points {
		p := &c.Points[i]
		if p.Poll == 0 {
			p.Poll = c.Poll
		}
		if p.Heartbeat == nil {
			p.Heartbeat = ptr(c.Heartbeat)
		}
		if p.QoS == nil {
			p.QoS = ptr(*c.QoS)
		}
		if p.Retain == nil {
			p.Retain = ptr(*c.Retain)
		}
		if p.Topic == "" {
			p.Topic = c.Topic
		}
		if c.Driver == "sim" {
			simDefaults(p)
		}
	}
}

// simDefaults fills the simulation keys of a sim point.
func simDefaults(p *PointConfig) {
	switch p.Sim {
	case "sine":
		if p.Period == 0 {
			p.Period = DefaultSimPeriod
		}
	case "random":
		if p.Step == nil && p.Min != nil && p.Max != nil {
			p.Step = ptr((*p.Max - *p.Min) / 20)
		}
	case "counter":
		if p.Value == nil {
			p.Value = ptr(0.0)
		}
		if p.Step == nil {
			p.Step = ptr(1.0)
		}
	case "toggle":
		if p.Value == nil {
			p.Value = ptr(0.0)
		}
	}
}

func ptr[T any](v T) *T { return &v }
