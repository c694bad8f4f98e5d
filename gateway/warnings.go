package gateway

import (
	"fmt"
	"net"
)

// Warnings lists what is valid in cfg but probably not meant: `fieldgate
// check` prints them (exit status 0) and `run` logs them at start.
func Warnings(cfg *Config) []string {
	var w []string
	if cfg.Bridge != nil {
		up := int(cfg.Bridge.Upstream.MaxPacketSize)
		if local := cfg.Broker.Limits.MaxPacketSize; up > 0 && local > up {
			w = append(w, fmt.Sprintf("broker.limits.max_packet_size (%d bytes) is larger than bridge.upstream.max_packet_size (%d): "+
				"a local message between the two is accepted but can never be forwarded (it is set aside and counted as too_large)", local, up))
		}
	}
	if a := cfg.Gateway.HTTP.Address; a != "off" {
		if host, _, err := net.SplitHostPort(a); err == nil {
			if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
				w = append(w, fmt.Sprintf("gateway.http.address %q listens on every interface: /metrics and /readyz are readable from the network (use 127.0.0.1:port unless that is meant)", a))
			}
		}
	}
	return w
}
