package bridge

import "strings"

// The functions below answer, from the configuration alone, how a topic
// travels through the routes. Integrations that describe local topics to a
// consumer on the upstream broker (Home Assistant discovery) use them to name
// the topics as the upstream sees them. gateway is the {gateway} value.

// UpstreamTopic returns the topic the upstream receives a local message on
// topic local as: the prefix of the first forward route whose filter matches
// it, plus local. ok is false when no forward route carries local. (Every
// matching route sends its own copy; the first is the one named here.)
func (c *Config) UpstreamTopic(gateway, local string) (topic string, ok bool) {
	for _, r := range c.Forward {
		if match(expand(r.Filter, gateway), local) {
			return expand(r.Prefix, gateway) + local, true
		}
	}
	return "", false
}

// ForwardSource returns a local topic that a forward route sends upstream as
// upstream, preferring the first route that can; ok is false when none can.
func (c *Config) ForwardSource(gateway, upstream string) (local string, ok bool) {
	for _, r := range c.Forward {
		rest, found := strings.CutPrefix(upstream, expand(r.Prefix, gateway))
		if found && rest != "" && match(expand(r.Filter, gateway), rest) {
			return rest, true
		}
	}
	return "", false
}

// LocalTopic returns the local topic the subscribe routes publish a message
// arriving upstream on topic upstream as (the first matching route decides,
// as in the bridge), and whether any route subscribes to it.
func (c *Config) LocalTopic(gateway, upstream string) (local string, ok bool) {
	for _, r := range c.Subscribe {
		if match(expand(r.Filter, gateway), upstream) {
			return expand(r.Prefix, gateway) + strings.TrimPrefix(upstream, expand(r.StripPrefix, gateway)), true
		}
	}
	return "", false
}

// SubscribeSource returns an upstream topic that the subscribe routes
// deliver locally as local, and whether one exists.
func (c *Config) SubscribeSource(gateway, local string) (upstream string, ok bool) {
	for _, r := range c.Subscribe {
		rest, found := strings.CutPrefix(local, expand(r.Prefix, gateway))
		if !found {
			continue
		}
		up := expand(r.StripPrefix, gateway) + rest
		if got, ok := c.LocalTopic(gateway, up); ok && got == local {
			return up, true
		}
	}
	return "", false
}
