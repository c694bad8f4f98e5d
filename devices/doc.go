// Package devices is fieldgate's device model: devices and points compiled
// from the `devices:` config, the drivers that read them (declared here,
// implemented in devices/modbus, devices/serial and devices/sim), poll
// scheduling, value handling and publishing to the local broker.
//
// # Lifecycle
//
// Validate checks a config (all problems, with paths); New validates,
// applies defaults (DeviceConfig.Defaults) and compiles topics, starting
// nothing; Set.Run runs one goroutine per device until its context is done.
//
// Each device goroutine opens the device through its Driver, then either
// polls it (PollConn) on schedule — every point at its own `poll:` interval,
// points due at the same instant read together in one Poll — or lets it
// stream (StreamConn). A failed Open, a Poll that fails as a whole (an error,
// or every point failing) or a Stream that returns closes the Conn, marks
// the device offline and reopens it after a backoff of 1s, doubling up to
// 30s (reset once the device has worked again). Missed poll slots are
// skipped, not queued. A streaming device is expected to send about every
// `poll:`; after three intervals without a good reading it is marked offline
// (the Conn stays open) and online again with its next reading.
//
// # Publishing
//
// A point's topic is its template ({gateway}, {device}, {point} and the
// device's `vars`) expanded once by New; the default template is
// "{gateway}/{device}/{point}". The device's availability topic is the
// expansion up to the level holding {point}, plus "/availability"
// ("myhome/groundfloor/boiler/availability"); it carries "online" or
// "offline", QoS 1, retained, published on every change (and "offline"
// when Run returns). State changes are logged once, not on every poll.
//
// Values: a Reading's raw value becomes raw*scale+offset for numbers
// (integers stay integers without scale and offset; scaled values are
// rounded to 12 significant digits to drop binary noise); bools and strings
// pass through. `payload: json` (the default) publishes
// {"value":…,"unit":…,"ts":"2006-01-02T15:04:05.000Z"} with the sample time
// in UTC (unit omitted when empty, "quality":"uncertain" added when the
// driver says so); `payload: value` publishes the bare value as text.
//
// A point with neither a deadband nor a heartbeat publishes every reading,
// so a subscriber that arrives late sees a steady value at the next poll.
// A point with either reports by exception: a value is published when it is the first since
// start or since the point or device recovered, when it changed — numbers by
// at least `deadband` and `deadband_percent` of the last published value
// (every configured band must be exceeded; without bands any change counts),
// other values by any change — or when `heartbeat` has passed since the
// point was last published. Deadbands compare with the last published
// value, so slow drifts are reported.
//
// # Honest readings (G6)
//
// A failed read is never published as a value. When one point fails while
// the device answers, `payload: json` points get one value-less
// {"quality":"bad","ts":…,"error":…} when they turn bad (`payload: value`
// points get nothing); when the whole poll fails the device goes offline
// and nothing else is published. After any failure the next good value is
// published at once, with its own sample time.
//
// # Write-back
//
// Each writable point is subscribed at `<point topic>/set` (only when
// Options.Subscriber is set). The payload is a bare value (21.5, true,
// false, on, off, text) or {"value": …}. It is checked (type, min, max,
// register range), converted to raw ((value-offset)/scale, rounded to the
// nearest integer for integer registers), written with WriteConn.Write on
// the device's own goroutine (never interleaved with a poll), read back
// with PollConn.Poll and the confirmed value published on the point topic
// (bypassing the deadband). The result, {"ok":true,"value":…} or
// {"ok":false,"error":"…"}, goes to `<point topic>/set/result` and, when
// the request carried an MQTT 5 response topic, there too with its
// correlation data. Requests for an offline or streaming device are
// answered with an error at once; up to 16 requests wait per device, more
// are dropped and counted (Stats.WritesDropped).
package devices
