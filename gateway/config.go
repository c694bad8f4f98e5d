package gateway

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/fieldgate/fieldgate/bridge"
	"github.com/fieldgate/fieldgate/broker"
	"github.com/fieldgate/fieldgate/buffer"
	"github.com/fieldgate/fieldgate/devices"
)

// DefaultConfigPath is where `fieldgate run` and `fieldgate check` look
// without --config.
const DefaultConfigPath = "/etc/fieldgate/fieldgate.yaml"

// Config is the whole configuration file. Each section is owned by the
// package that uses it; the gateway decodes the file strictly (an unknown key
// is an error), applies defaults in Defaults and validates in Validate.
type Config struct {
	Gateway GatewayConfig          `yaml:"gateway"`
	Broker  broker.Config          `yaml:"broker"`
	Devices []devices.DeviceConfig `yaml:"devices"`
	// Bridge is nil when the file has no `bridge:` section: the gateway then
	// runs as a local broker with devices and stores nothing.
	Bridge *bridge.Config `yaml:"bridge"`
	// Integrations feed the device map to other systems (Home Assistant
	// discovery); see homeassistant.go.
	Integrations IntegrationsConfig `yaml:"integrations"`

	warnings []Problem
}

// Warnings are the settings of a loaded file that are valid but almost
// certainly wrong (see lint); `check` prints them and `run` logs them.
func (c *Config) Warnings() []Problem { return c.warnings }

// GatewayConfig is the `gateway:` section.
type GatewayConfig struct {
	// ID names this gateway: {gateway} in topics and the default upstream
	// client id. Default: the host name. Letters, digits, '-', '_', '.'.
	ID string `yaml:"id"`
	// DataDir holds the buffer, the broker's retained messages and sessions,
	// and the upstream session state. Default /var/lib/fieldgate.
	DataDir string     `yaml:"data_dir"`
	Log     LogConfig  `yaml:"log"`
	HTTP    HTTPConfig `yaml:"http"`
	// ShutdownTimeout bounds a clean stop on SIGINT/SIGTERM: in-flight
	// publishes finish, the store is flushed. Default 10s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// MarkUnsyncedReadings publishes readings sampled while the system
	// clock is not synchronised (a Pi has no RTC) with
	// "quality":"uncertain", and logs when the clock's state changes.
	// Default true.
	MarkUnsyncedReadings *bool `yaml:"mark_unsynced_readings"`
	// MemoryLimit is the Go runtime's soft memory limit for the process
	// (debug.SetMemoryLimit): the garbage collector works harder as the
	// heap approaches it, which keeps a Pi-sized gateway small with a large
	// backlog. Default 80MiB; 0 leaves the runtime's default. The GOMEMLIMIT
	// environment variable, when set, wins. While a limit is in effect the
	// collector's target is GOGC=400 (see gcPercent) unless GOGC is set.
	MemoryLimit *buffer.Size `yaml:"memory_limit"`
}

// LogConfig selects the log level (debug, info, warn, error; default info)
// and format (text or json; default text). Under systemd (JOURNAL_STREAM set)
// the text format omits the timestamp, which journald adds.
type LogConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// HTTPConfig is the ops endpoint: /healthz, /readyz, /metrics. Address
// defaults to 127.0.0.1:9180 (not 9100: that is node_exporter's port);
// "off" disables it.
type HTTPConfig struct {
	Address string `yaml:"address"`
}

// Defaults fills every unset value. It is the one place defaults of the
// gateway section live; the other sections' defaults are applied by their
// packages from here.
func (c *Config) Defaults() {
	g := &c.Gateway
	if g.ID == "" {
		if h, err := os.Hostname(); err == nil {
			g.ID = sanitizeID(h)
		}
		if g.ID == "" {
			g.ID = "fieldgate"
		}
	}
	if g.DataDir == "" {
		g.DataDir = "/var/lib/fieldgate"
	}
	if g.Log.Level == "" {
		g.Log.Level = "info"
	}
	if g.Log.Format == "" {
		g.Log.Format = "text"
	}
	if g.HTTP.Address == "" {
		g.HTTP.Address = "127.0.0.1:9180"
	}
	if g.ShutdownTimeout == 0 {
		g.ShutdownTimeout = 10 * time.Second
	}
	if g.MemoryLimit == nil {
		limit := 80 * buffer.MiB
		g.MemoryLimit = &limit
	}
	if g.MarkUnsyncedReadings == nil {
		mark := true
		g.MarkUnsyncedReadings = &mark
	}
	c.Broker.Defaults()
	for i := range c.Devices {
		c.Devices[i].Defaults()
	}
	if c.Bridge != nil {
		c.Bridge.Defaults()
	}
	c.Integrations.defaults()
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

func sanitizeID(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '.' || r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
			return r
		}
		return '-'
	}, s)
	return strings.Trim(s, "-._")
}

// Validate returns every problem of the configuration, each with its path
// relative to the file's root. It does not touch the network or devices.
func (c *Config) Validate(drivers map[string]devices.Driver) []Problem {
	var probs []Problem
	add := func(path, format string, args ...any) {
		probs = append(probs, Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	g := c.Gateway
	if !idPattern.MatchString(g.ID) {
		add("gateway.id", "%q: use letters, digits, '.', '-' and '_' (it appears in MQTT topics)", g.ID)
	}
	switch g.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("gateway.log.level", "%q: want debug, info, warn or error", g.Log.Level)
	}
	switch g.Log.Format {
	case "text", "json":
	default:
		add("gateway.log.format", "%q: want text or json", g.Log.Format)
	}
	if g.HTTP.Address != "off" {
		if _, _, err := net.SplitHostPort(g.HTTP.Address); err != nil {
			add("gateway.http.address", "%q: want host:port or off", g.HTTP.Address)
		}
	}
	if *g.MemoryLimit < 0 || *g.MemoryLimit > 0 && *g.MemoryLimit < 16*buffer.MiB {
		add("gateway.memory_limit", "%s: want 0 (runtime default) or at least 16MiB", *g.MemoryLimit)
	}
	if g.ShutdownTimeout < 0 {
		add("gateway.shutdown_timeout", "must not be negative")
	}
	probs = append(probs, fieldProblems("broker", c.Broker.Validate())...)
	probs = append(probs, fieldProblems("devices", devices.Validate(c.Devices, drivers))...)
	if c.Bridge != nil {
		probs = append(probs, fieldProblems("bridge", c.Bridge.Validate())...)
	}
	probs = append(probs, c.integrationProblems(drivers)...)
	return probs
}

// fieldPather is what every package's configuration errors implement.
type fieldPather interface {
	error
	FieldPath() string
}

// fieldProblems flattens an errors.Join tree into problems, prefixing each
// package-relative path with the section's name.
func fieldProblems(section string, err error) []Problem {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var probs []Problem
		for _, e := range j.Unwrap() {
			probs = append(probs, fieldProblems(section, e)...)
		}
		return probs
	}
	var fe fieldPather
	if errors.As(err, &fe) {
		rel := fe.FieldPath()
		msg := strings.TrimPrefix(fe.Error(), rel+": ")
		return []Problem{{Path: joinPath(section, rel), Msg: msg}}
	}
	return []Problem{{Path: section, Msg: err.Error()}}
}

func joinPath(section, rel string) string {
	switch {
	case section == "":
		return rel
	case rel == "":
		return section
	case strings.HasPrefix(rel, "["):
		return section + rel
	}
	return section + "." + rel
}

// Load reads, decodes, defaults and validates the configuration file. On
// any problem it returns a *ConfigError listing all of them with their lines.
func Load(path string, drivers map[string]devices.Driver) (*Config, error) {
	return load(path, drivers, true)
}

// LoadForDoctor is Load without opening the *_file keys: doctor checks
// them itself, for the service user, one line each.
func LoadForDoctor(path string, drivers map[string]devices.Driver) (*Config, error) {
	return load(path, drivers, false)
}

func load(path string, drivers map[string]devices.Driver, files bool) (*Config, error) {
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("read config: %w (the gateway runs as user %s under systemd: chgrp %s %s && chmod 0640 %s)", err, ServiceUser, ServiceUser, path, path)
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("read config: %w (give the file with --config; the packaged one is %s)", err, DefaultConfigPath)
	case err != nil:
		return nil, fmt.Errorf("read config: %w", err)
	}
	return parseConfig(path, data, drivers, files)
}

// Parse is Load for configuration text already read; name is used in errors.
func Parse(name string, data []byte, drivers map[string]devices.Driver) (*Config, error) {
	return parseConfig(name, data, drivers, true)
}

func parseConfig(name string, data []byte, drivers map[string]devices.Driver, files bool) (*Config, error) {
	var cfg Config
	pos, probs := decodeStrict(data, &cfg)
	if pos == nil { // not YAML at all
		return nil, &ConfigError{File: name, Problems: probs}
	}
	// yaml.v3 keeps decoding past type errors, so what did decode is
	// validated too and every problem is reported at once; a value that
	// failed to decode is not reported again by validation.
	bad := map[string]bool{}
	for _, p := range probs {
		bad[p.Path] = true
	}
	// `max_age: 0` means "keep forever"; an absent key means the default.
	_, written := pos.lines["bridge.buffer.max_age"]
	keepForever := written && cfg.Bridge != nil && cfg.Bridge.Buffer.MaxAge == 0
	cfg.Defaults()
	if keepForever {
		cfg.Bridge.Buffer.MaxAge = 0
	}
	reported := map[string]bool{} // paths validation found a problem with
	for _, p := range cfg.Validate(drivers) {
		if bad[p.Path] {
			continue
		}
		p.Line = pos.line(p.Path)
		p.Msg = withHint(p.Msg)
		reported[p.Path] = true
		probs = append(probs, p)
	}
	if files {
		for _, p := range fileProblems(pos) {
			if !bad[p.Path] && !reported[p.Path] {
				probs = append(probs, p)
			}
		}
	}
	if len(probs) > 0 {
		sortProblems(probs)
		return nil, &ConfigError{File: name, Problems: probs}
	}
	cfg.warnings = lint(&cfg, pos)
	return &cfg, nil
}
