package sparkplug

import (
	"errors"
	"fmt"
	"strings"
)

// Config is the `bridge.sparkplug` section of the configuration file. When
// the section is present the upstream link speaks Sparkplug B.
type Config struct {
	// GroupID is the Sparkplug group the edge node belongs to. Required.
	GroupID string `yaml:"group_id"`
	// EdgeNodeID names the gateway within the group. A template: {gateway}
	// is replaced by the gateway id. Default "{gateway}".
	EdgeNodeID string `yaml:"edge_node_id"`
	// PrimaryHostID, when set, is the host application whose
	// spBv1.0/STATE/<id> message gates publishing: the node publishes only
	// while that host reports itself online. Empty: no primary host.
	PrimaryHostID string `yaml:"primary_host_id"`
}

// FieldError is one configuration problem. Path is relative to the
// `bridge:` section ("sparkplug.group_id").
type FieldError struct{ Path, Msg string }

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// FieldPath returns the key the problem is about.
func (e *FieldError) FieldPath() string { return e.Path }

// Defaults fills every unset field with its default. It is idempotent.
func (c *Config) Defaults() {
	if c.EdgeNodeID == "" {
		c.EdgeNodeID = "{gateway}"
	}
}

// Validate reports every problem (errors.Join of *FieldError). Call after
// Defaults. Ids follow CheckID; {gateway} in edge_node_id is checked again
// by Expand once the gateway id is known. "STATE" is refused as a group id
// because spBv1.0/STATE/… is the host state namespace.
func (c *Config) Validate() error {
	var errs []error
	check := func(key, v string, required bool) {
		if v == "" && !required {
			return
		}
		if err := CheckID(v); err != nil {
			errs = append(errs, &FieldError{Path: "sparkplug." + key, Msg: err.Error()})
		}
	}
	check("group_id", c.GroupID, true)
	if c.GroupID == "STATE" {
		errs = append(errs, &FieldError{Path: "sparkplug.group_id", Msg: `"STATE" is reserved for host application state topics`})
	}
	check("edge_node_id", strings.ReplaceAll(c.EdgeNodeID, "{gateway}", "g"), true)
	if rest := strings.ReplaceAll(c.EdgeNodeID, "{gateway}", ""); strings.ContainsAny(rest, "{}") {
		errs = append(errs, &FieldError{Path: "sparkplug.edge_node_id", Msg: fmt.Sprintf("%q: the only placeholder is {gateway}", c.EdgeNodeID)})
	}
	check("primary_host_id", c.PrimaryHostID, false)
	return errors.Join(errs...)
}

// Expand returns the configuration with {gateway} replaced by gatewayID in
// EdgeNodeID, and an error when the result is not a valid edge node id.
func (c Config) Expand(gatewayID string) (Config, error) {
	c.EdgeNodeID = strings.ReplaceAll(c.EdgeNodeID, "{gateway}", gatewayID)
	if err := CheckID(c.EdgeNodeID); err != nil {
		return Config{}, &FieldError{Path: "sparkplug.edge_node_id", Msg: fmt.Sprintf("with gateway id %q: %v", gatewayID, err)}
	}
	return c, nil
}
