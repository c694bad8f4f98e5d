package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func parse(t *testing.T, text string) (*Config, *ConfigError) {
	t.Helper()
	cfg, err := Parse("test.yaml", []byte(text), Drivers(slog.New(slog.DiscardHandler)))
	if err == nil {
		return cfg, nil
	}
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v is not a *ConfigError", err)
	}
	return nil, ce
}

func TestParseDefaults(t *testing.T) {
	cfg, ce := parse(t, "gateway: {id: gw-1}\n")
	if ce != nil {
		t.Fatal(ce)
	}
	g := cfg.Gateway
	if g.DataDir != "/var/lib/fieldgate" || g.HTTP.Address != "127.0.0.1:9180" || g.Log.Level != "info" || g.Log.Format != "text" || g.ShutdownTimeout != 10*time.Second {
		t.Errorf("defaults not applied: %+v", g)
	}
	if cfg.Bridge != nil {
		t.Errorf("no bridge section, but Bridge = %+v", cfg.Bridge)
	}
	if len(cfg.Broker.Listeners) == 0 {
		t.Error("broker listeners not defaulted")
	}
}

// An explicit max_age: 0 keeps records forever; an absent one is 168h.
func TestBufferMaxAge(t *testing.T) {
	base := "gateway: {id: gw}\nbridge:\n  upstream: {url: mqtt://127.0.0.1:1}\n  forward: [{filter: '#'}]\n"
	cfg, ce := parse(t, base)
	if ce != nil {
		t.Fatal(ce)
	}
	if cfg.Bridge.Buffer.MaxAge != 168*time.Hour {
		t.Errorf("absent max_age = %s, want 168h", cfg.Bridge.Buffer.MaxAge)
	}
	cfg, ce = parse(t, base+"  buffer: {max_age: 0s}\n")
	if ce != nil {
		t.Fatal(ce)
	}
	if cfg.Bridge.Buffer.MaxAge != 0 {
		t.Errorf("explicit max_age 0 = %s, want 0 (keep forever)", cfg.Bridge.Buffer.MaxAge)
	}
}

func TestParseProblems(t *testing.T) {
	tests := []struct {
		name, text string
		want       []string
	}{
		{"syntax", "gateway: [\n", []string{"line 1: did not find expected node content"}},
		{"unknown keys everywhere", "gateway:\n  idd: x\nbroker:\n  listenerz: []\n", []string{
			`gateway.idd (line 2): unknown key "idd"`,
			`broker.listenerz (line 4): unknown key "listenerz"`,
		}},
		{"bad duration and size with a validation error", "gateway:\n  id: 'a b'\n  shutdown_timeout: soon\nbridge:\n  upstream: {url: mqtt://h:1}\n  forward: [{filter: '#'}]\n  buffer: {max_bytes: huge}\n", []string{
			`gateway.id (line 2): "a b": use letters, digits, '.', '-' and '_' (it appears in MQTT topics)`,
			`gateway.shutdown_timeout (line 3): "soon" must be a duration, e.g. 2s, 500ms or 5m`,
			`bridge.buffer.max_bytes (line 7): invalid size "huge"`,
		}},
		{"http address", "gateway: {id: x, http: {address: nope}}\n", []string{
			`gateway.http.address (line 1): "nope": want host:port or off`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ce := parse(t, tt.text)
			if ce == nil {
				t.Fatal("no error")
			}
			var got []string
			for _, p := range ce.Problems {
				got = append(got, p.String())
			}
			// Compare prefixes: messages from other packages may add detail.
			if len(got) != len(tt.want) {
				t.Fatalf("problems (-want +got):\n%s", cmp.Diff(tt.want, got))
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tt.want[i]) {
					t.Errorf("problem %d = %q, want prefix %q", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestSummary(t *testing.T) {
	cfg, ce := parse(t, "gateway: {id: gw}\ndevices:\n  - {name: d, driver: sim, points: [{name: p, sim: toggle}]}\n")
	if ce != nil {
		t.Fatal(ce)
	}
	s := Summary(cfg)
	for _, want := range []string{"gateway gw", "1 device(s), 1 point(s)", "no bridge"} {
		if !strings.Contains(s, want) {
			t.Errorf("summary %q lacks %q", s, want)
		}
	}
}

// Where 0 is a meaningful value, an explicit 0 survives defaulting and an
// absent key gets the default (issue 15: `qos: 0` used to become 1).
func TestExplicitZeroKept(t *testing.T) {
	const base = `gateway: {id: gw}
broker:
  limits: {%s}
devices:
  - name: d
    driver: sim
    heartbeat: 10s%s
    points:
      - {name: p, sim: constant, value: 1%s}
bridge:
  upstream: {url: "mqtt://127.0.0.1:1"%s}
  forward: [{filter: "#"%s}]
  subscribe: [{filter: "cmd/#"%s}]
  buffer: {%s}
%s
`
	type keys struct{ limits, device, point, upstream, forward, subscribe, buffer, bridge string }
	for _, tc := range []struct {
		name      string
		set       keys
		get       func(*Config) any
		zero, def any
	}{
		{"bridge.forward[].qos", keys{forward: ", qos: 0"}, func(c *Config) any { return *c.Bridge.Forward[0].QoS }, byte(0), byte(1)},
		{"bridge.subscribe[].qos", keys{subscribe: ", qos: 0"}, func(c *Config) any { return *c.Bridge.Subscribe[0].QoS }, byte(0), byte(1)},
		{"bridge.upstream.keepalive", keys{upstream: ", keepalive: 0s"}, func(c *Config) any { return *c.Bridge.Upstream.KeepAlive }, time.Duration(0), 30 * time.Second},
		{"bridge.upstream.session_expiry", keys{upstream: ", session_expiry: 0s"}, func(c *Config) any { return *c.Bridge.Upstream.SessionExpiry }, time.Duration(0), time.Hour},
		{"bridge.status_interval", keys{bridge: "  status_interval: 0s"}, func(c *Config) any { return *c.Bridge.StatusInterval }, time.Duration(0), time.Minute},
		{"bridge.buffer.max_age", keys{buffer: "max_age: 0s"}, func(c *Config) any { return c.Bridge.Buffer.MaxAge }, time.Duration(0), 168 * time.Hour},
		{"broker.limits.topic_alias_maximum", keys{limits: "topic_alias_maximum: 0"}, func(c *Config) any { return *c.Broker.Limits.TopicAliasMaximum }, 0, 64},
		{"broker.limits.max_session_expiry", keys{limits: "max_session_expiry: 0s"}, func(c *Config) any { return *c.Broker.Limits.MaxSessionExpiry }, time.Duration(0), 168 * time.Hour},
		{"devices[].points[].heartbeat", keys{point: ", heartbeat: 0s"}, func(c *Config) any { return *c.Devices[0].Points[0].Heartbeat }, time.Duration(0), 10 * time.Second},
		{"devices[].points[].qos", keys{point: ", qos: 0"}, func(c *Config) any { return *c.Devices[0].Points[0].QoS }, 0, 1},
		{"devices[].retries", keys{device: "\n    retries: 0"}, func(c *Config) any { return *c.Devices[0].Retries }, 0, 1},
		{"devices[].qos", keys{device: "\n    qos: 0"}, func(c *Config) any { return *c.Devices[0].Points[0].QoS }, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := func(k keys) string {
				return fmt.Sprintf(base, k.limits, k.device, k.point, k.upstream, k.forward, k.subscribe, k.buffer, k.bridge)
			}
			cfg, ce := parse(t, text(keys{}))
			if ce != nil {
				t.Fatal(ce)
			}
			if got := tc.get(cfg); got != tc.def {
				t.Errorf("key absent: %v (%T), want the default %v", got, got, tc.def)
			}
			cfg, ce = parse(t, text(tc.set))
			if ce != nil {
				t.Fatal(ce)
			}
			if got := tc.get(cfg); got != tc.zero {
				t.Errorf("explicit 0: %v (%T), want %v", got, got, tc.zero)
			}
		})
	}
}
