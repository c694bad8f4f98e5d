package homeassistant

import (
	"errors"
	"fmt"
	"strings"
)

// Config is the `integrations.homeassistant:` section. The gateway decodes
// it strictly, calls Defaults and then Validate; Build checks what depends on
// the device map and the bridge's routes.
type Config struct {
	// Enabled turns discovery on; default true once the section exists.
	Enabled *bool `yaml:"enabled"`
	// Broker is where Home Assistant's MQTT integration connects: "local"
	// (the gateway's own broker, the default) or "upstream" (the broker the
	// bridge forwards to; discovery, state and availability then travel
	// through bridge.forward routes and commands through bridge.subscribe
	// routes, and every topic in the discovery payloads is named as the
	// upstream sees it).
	Broker string `yaml:"broker"`
	// DiscoveryPrefix is Home Assistant's discovery prefix, as Home
	// Assistant sees it. Default "homeassistant".
	DiscoveryPrefix string `yaml:"discovery_prefix"`
	// StatusTopic is where Home Assistant publishes "online" when it
	// starts (its birth message), as Home Assistant sees it; discovery is
	// sent again then. Default "homeassistant/status".
	StatusTopic string `yaml:"status_topic"`
	// AvailabilityTopic is the gateway's own availability topic on the
	// local broker (broker: local only): the gateway publishes a retained
	// "online" there at start and "offline" when it stops. A template
	// ({gateway}). Default "{gateway}/status". With broker: upstream the
	// bridge's status topic (bridge.upstream.status_topic, with its
	// retained will) is used instead.
	AvailabilityTopic string `yaml:"availability_topic"`
	// Name is the gateway's device name in Home Assistant. Default: the
	// gateway id.
	Name string `yaml:"name"`
	// Area is the gateway device's suggested area, and the default of its
	// devices. Empty: none.
	Area string `yaml:"area"`
	// QoS of the discovery and availability messages, 0-2. Default 1.
	QoS *int `yaml:"qos"`
}

// Broker values.
const (
	BrokerLocal    = "local"
	BrokerUpstream = "upstream"
)

// Defaults of the section's keys.
const (
	DefaultDiscoveryPrefix   = "homeassistant"
	DefaultStatusTopic       = "homeassistant/status"
	DefaultAvailabilityTopic = "{gateway}/status"
)

// Defaults fills every absent key. It is idempotent.
func (c *Config) Defaults() {
	if c.Enabled == nil {
		on := true
		c.Enabled = &on
	}
	if c.Broker == "" {
		c.Broker = BrokerLocal
	}
	if c.DiscoveryPrefix == "" {
		c.DiscoveryPrefix = DefaultDiscoveryPrefix
	}
	if c.StatusTopic == "" {
		c.StatusTopic = DefaultStatusTopic
	}
	if c.AvailabilityTopic == "" {
		c.AvailabilityTopic = DefaultAvailabilityTopic
	}
	if c.QoS == nil {
		q := 1
		c.QoS = &q
	}
}

// On reports whether discovery is enabled. Call after Defaults.
func (c *Config) On() bool { return c.Enabled != nil && *c.Enabled }

// FieldError is one configuration problem. Path is relative to the file's
// root ("integrations.homeassistant.broker",
// "devices[2].points[1].homeassistant.device_class").
type FieldError struct{ Path, Msg string }

func (e *FieldError) Error() string     { return e.Path + ": " + e.Msg }
func (e *FieldError) FieldPath() string { return e.Path }

const section = "integrations.homeassistant"

// Validate reports every problem of the section's own keys (errors.Join of
// *FieldError). Call after Defaults.
func (c *Config) Validate() error {
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, &FieldError{Path: section + "." + key, Msg: fmt.Sprintf(format, args...)})
	}
	switch c.Broker {
	case BrokerLocal, BrokerUpstream:
	default:
		add("broker", "%q: want local or upstream", c.Broker)
	}
	if err := checkTopic(c.DiscoveryPrefix); err != nil {
		add("discovery_prefix", "%v", err)
	}
	if err := checkTopic(c.StatusTopic); err != nil {
		add("status_topic", "%v", err)
	}
	if err := checkTopic(strings.ReplaceAll(c.AvailabilityTopic, "{gateway}", "g")); err != nil {
		add("availability_topic", "%v", err)
	} else if strings.ContainsAny(strings.ReplaceAll(c.AvailabilityTopic, "{gateway}", ""), "{}") {
		add("availability_topic", "%q: only the {gateway} placeholder is supported", c.AvailabilityTopic)
	}
	if *c.QoS < 0 || *c.QoS > 2 {
		add("qos", "%d: want 0, 1 or 2", *c.QoS)
	}
	return errors.Join(errs...)
}

// checkTopic rejects what cannot be an MQTT topic name that fieldgate
// publishes or subscribes to exactly.
func checkTopic(t string) error {
	switch {
	case t == "":
		return errors.New("empty topic")
	case strings.ContainsAny(t, "+#\x00"):
		return fmt.Errorf("%q contains a wildcard or NUL", t)
	case strings.HasPrefix(t, "$"):
		return fmt.Errorf("%q starts with '$' (reserved for the broker)", t)
	case strings.HasPrefix(t, "/") || strings.HasSuffix(t, "/") || strings.Contains(t, "//"):
		return fmt.Errorf("%q has an empty level", t)
	}
	return nil
}
