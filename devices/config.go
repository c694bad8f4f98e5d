package devices

import "time"

// DeviceConfig is one entry of the `devices:` list of the configuration file.
// It is the union of the keys every driver accepts; each driver validates the
// keys it uses and Validate rejects keys that make no sense for the driver.
// The gateway decodes it strictly from YAML (the tags below are the product's
// key names) and calls Validate before anything is started.
type DeviceConfig struct {
	Name   string `yaml:"name"`   // {device} in topics; unique, [A-Za-z0-9_-]+
	Driver string `yaml:"driver"` // modbus | serial | sim

	// Modbus.
	Transport string `yaml:"transport"` // rtu | tcp
	Address   string `yaml:"address"`   // host:port for transport tcp
	Unit      *int   `yaml:"unit"`      // Modbus slave id (0-247; default 1)

	// Serial port (modbus rtu and serial drivers).
	Port     string     `yaml:"port"` // /dev/serial/by-id/... preferred
	USB      *USBConfig `yaml:"usb"`  // alternative to port: find the adapter by identity
	Baud     int        `yaml:"baud"`
	DataBits int        `yaml:"data_bits"` // default 8
	Parity   string     `yaml:"parity"`    // N | E | O (default N)
	StopBits int        `yaml:"stop_bits"` // 1 | 2 (default 1)
	RS485    *RS485     `yaml:"rs485"`     // kernel RS-485 mode, where supported

	// Line-oriented serial sensors.
	Request       string       `yaml:"request"`         // sent each poll; empty = streaming
	Parse         *ParseConfig `yaml:"parse"`           // regex | json | kv
	Terminator    string       `yaml:"terminator"`      // default "\n" ("\r\n" is trimmed too)
	MaxLineLength int          `yaml:"max_line_length"` // bytes, default 1024

	// Polling and timing.
	Poll    time.Duration `yaml:"poll"`    // default 5s (sim: 1s); streaming sensors: expected interval, offline after 3 silent ones
	Timeout time.Duration `yaml:"timeout"` // per request, default 1s
	Retries *int          `yaml:"retries"` // per request after a timeout, default 1

	// Modbus read planning and device workarounds.
	MaxGap             *int          `yaml:"max_gap"`       // registers/bits merged across a gap, default 10
	MaxRegisters       int           `yaml:"max_registers"` // per request, default 125 (bits: 2000)
	RequestPause       time.Duration `yaml:"request_pause"` // pause between requests
	OneRequestPerPoint bool          `yaml:"one_request_per_point"`

	// Publishing.
	Topic     string            `yaml:"topic"`     // template: {gateway} {device} {point} and vars
	Vars      map[string]string `yaml:"vars"`      // extra template variables
	QoS       *int              `yaml:"qos"`       // default for points, 0-2, default 1
	Retain    *bool             `yaml:"retain"`    // default for points, default false
	Payload   string            `yaml:"payload"`   // json (default) | value
	Heartbeat time.Duration     `yaml:"heartbeat"` // re-publish unchanged values at least this often; 0 = never

	// Description of the hardware, for integrations (Home Assistant's
	// device registry); the pollers ignore them.
	Manufacturer  string               `yaml:"manufacturer"`
	Model         string               `yaml:"model"`
	HomeAssistant *HomeAssistantDevice `yaml:"homeassistant"`

	Points []PointConfig `yaml:"points"`
}

// HomeAssistantDevice adjusts how a device appears in Home Assistant
// (integrations.homeassistant). The pollers ignore it; the integration
// validates it.
type HomeAssistantDevice struct {
	Enabled *bool  `yaml:"enabled"` // false: no Home Assistant device or entities (default true)
	Name    string `yaml:"name"`    // device name shown in Home Assistant (default: the device's name)
	Area    string `yaml:"area"`    // suggested_area
}

// HomeAssistantPoint adjusts a point's Home Assistant entity. Empty fields
// keep what the integration derives from the point (type, writable, unit).
// The pollers ignore it; the integration validates it.
type HomeAssistantPoint struct {
	Enabled     *bool    `yaml:"enabled"`      // false: no entity for this point (default true)
	Component   string   `yaml:"component"`    // sensor | binary_sensor | number | switch
	Name        string   `yaml:"name"`         // entity name (default: the point's name)
	DeviceClass string   `yaml:"device_class"` // "none" drops the derived one
	StateClass  string   `yaml:"state_class"`  // measurement | total | total_increasing | none
	Unit        string   `yaml:"unit"`         // unit_of_measurement (default: the point's unit)
	Icon        string   `yaml:"icon"`         // mdi:...
	Step        *float64 `yaml:"step"`         // number entities: the step of the control
	Mode        string   `yaml:"mode"`         // number entities: auto | box | slider
}

// USBConfig finds a serial adapter by USB identity (hex vid/pid as printed by lsusb).
type USBConfig struct {
	VID    string `yaml:"vid"`
	PID    string `yaml:"pid"`
	Serial string `yaml:"serial"`
}

// RS485 enables the kernel's RS-485 mode on the port.
type RS485 struct {
	Enabled            bool          `yaml:"enabled"`
	DelayRTSBeforeSend time.Duration `yaml:"delay_rts_before_send"`
	DelayRTSAfterSend  time.Duration `yaml:"delay_rts_after_send"`
	RTSHighDuringSend  bool          `yaml:"rts_high_during_send"`
	RTSHighAfterSend   bool          `yaml:"rts_high_after_send"`
	RXDuringTX         bool          `yaml:"rx_during_tx"`
}

// ParseConfig says how a line from a serial sensor becomes point values.
// Exactly one of Regex, JSON or KV is set.
type ParseConfig struct {
	Regex string `yaml:"regex"` // named groups are point names
	JSON  bool   `yaml:"json"`  // one JSON object per line; keys are point names
	KV    bool   `yaml:"kv"`    // "a=1 b=2"
}

// ValidRange bounds plausible values; either bound may be left out.
type ValidRange struct {
	Min *float64 `yaml:"min"`
	Max *float64 `yaml:"max"`
}

// PointConfig is one entry of a device's `points:` list.
type PointConfig struct {
	Name string `yaml:"name"` // {point} in topics
	// Key is the field of a serial sensor's line (kv or json parsing)
	// that carries this point, e.g. "T" in "T=21.5 H=40"; default: the
	// point's name.
	Key string `yaml:"key"`

	// Modbus register map.
	Table   string `yaml:"table"`   // holding | input | coil | discrete
	Address *int   `yaml:"address"` // 0-based register or bit address
	Type    string `yaml:"type"`    // bool int16 uint16 int32 uint32 int64 uint64 float32 float64 string bit
	Order   string `yaml:"order"`   // ABCD (default) CDAB BADC DCBA, or 8-byte orders such as ABCDEFGH, GHEFCDAB
	Length  int    `yaml:"length"`  // registers, for type string
	Bit     *int   `yaml:"bit"`     // 0-15, for type bit

	// Value handling (all drivers).
	Unit   string   `yaml:"unit"`
	Scale  *float64 `yaml:"scale"` // value = raw*scale + offset
	Offset float64  `yaml:"offset"`
	// Valid is the plausible range of the engineering value: a reading
	// outside it is published with "quality":"bad" and counted (a wrong
	// table, type, byte order or scale shows up this way). Nil: no check.
	Valid           *ValidRange `yaml:"valid"`
	Deadband        float64     `yaml:"deadband"`         // absolute: publish only when |Δ| ≥ deadband
	DeadbandPercent float64     `yaml:"deadband_percent"` // relative to the last published value

	Poll      time.Duration  `yaml:"poll"`      // overrides the device's poll
	Heartbeat *time.Duration `yaml:"heartbeat"` // overrides the device's heartbeat; 0 = never for this point
	QoS       *int           `yaml:"qos"`
	Retain    *bool          `yaml:"retain"`
	Topic     string         `yaml:"topic"` // overrides the device's topic template

	// Write-back.
	Writable bool     `yaml:"writable"`
	Min      *float64 `yaml:"min"` // write limits; for sim points the value range
	Max      *float64 `yaml:"max"`

	// Home Assistant entity overrides (integrations.homeassistant).
	HomeAssistant *HomeAssistantPoint `yaml:"homeassistant"`

	// Simulation.
	Sim    string        `yaml:"sim"`    // sine | random | counter | constant | toggle
	Period time.Duration `yaml:"period"` // sine period, default 1m
	Value  *float64      `yaml:"value"`  // constant value / counter start
	Step   *float64      `yaml:"step"`   // counter increment / random walk step
}
