// Package homeassistant turns fieldgate's device map into Home Assistant MQTT
// discovery: one Home Assistant device per fieldgate device (via the gateway,
// itself a device), one entity per point (sensor, binary_sensor, number or
// switch), with device and state classes derived from the point's unit,
// value templates that keep bad readings out of the history, and
// availability from the device and the gateway.
//
// Build compiles a configuration into an immutable Plan and reports every
// problem with its path (for `fieldgate check`); a Runner keeps the retained
// configs on the broker equal to the current Plan: it sends them at start
// and whenever Home Assistant announces itself, and on Update sends only
// what changed and clears removed entities with an empty retained message.
//
// The package sees only the device model (package devices). Where Home
// Assistant listens on the upstream broker, the gateway passes a Topics
// that names every topic as the upstream sees it, through the bridge's
// routes.
package homeassistant
