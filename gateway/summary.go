package gateway

import (
	"fmt"
	"strings"
)

// Summary describes a valid configuration in a few lines, for
// `fieldgate check`.
func Summary(cfg *Config) string {
	var b strings.Builder
	fmt.Fprintf(&b, "gateway %s, data in %s\n", cfg.Gateway.ID, cfg.Gateway.DataDir)
	for _, l := range cfg.Broker.Listeners {
		fmt.Fprintf(&b, "listener %s %s\n", l.Type, l.Address)
	}
	points := 0
	for _, d := range cfg.Devices {
		points += len(d.Points)
	}
	fmt.Fprintf(&b, "%d device(s), %d point(s)\n", len(cfg.Devices), points)
	if cfg.Bridge == nil {
		b.WriteString("no bridge: nothing is forwarded upstream\n")
	} else {
		fmt.Fprintf(&b, "bridge to %s: %d forward route(s), %d subscribe route(s), buffer %s\n",
			cfg.Bridge.Upstream.URL, len(cfg.Bridge.Forward), len(cfg.Bridge.Subscribe), cfg.Bridge.Buffer.MaxBytes)
	}
	if haEnabled(cfg) {
		ha := cfg.Integrations.HomeAssistant
		fmt.Fprintf(&b, "Home Assistant discovery on the %s broker, prefix %s\n", ha.Broker, ha.DiscoveryPrefix)
	}
	return b.String()
}
