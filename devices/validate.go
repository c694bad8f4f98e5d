package devices

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"
)

var (
	nameRE   = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	hex4RE   = regexp.MustCompile(`^[0-9A-Fa-f]{4}$`)
	simKinds = []string{"sine", "random", "counter", "constant", "toggle"}
)

// reservedVars are the template variables every device has.
var reservedVars = []string{"gateway", "device", "point"}

// validator collects every problem; add never stops the walk.
type validator struct {
	errs []error
}

func (v *validator) add(path, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// Validate checks the `devices:` list and returns errors.Join of one
// *FieldError per problem (all of them, not the first), with paths relative
// to the list: "[2].points[5].address". drivers is the table of drivers by
// `driver:` name; a Driver that implements DeviceValidator adds its own
// checks, and one that implements WriteSupporter and returns false rejects
// writable points. Validate applies Defaults to a copy of each device; the
// caller's configs are not modified. It returns nil when all is well.
func Validate(cfgs []DeviceConfig, drivers map[string]Driver) error {
	v := &validator{}
	seen := map[string]int{}
	for i := range cfgs {
		raw := &cfgs[i]
		c := *raw
		c.Defaults()
		if !nameRE.MatchString(c.Name) {
			c.Name = "device" // reported below; a placeholder keeps topic checks meaningful
		}
		v.device(fmt.Sprintf("[%d]", i), raw, &c, drivers)
		if j, dup := seen[raw.Name]; dup && raw.Name != "" {
			v.add(fmt.Sprintf("[%d].name", i), "duplicate device name %q (also [%d])", raw.Name, j)
		} else {
			seen[raw.Name] = i
		}
	}
	return errors.Join(v.errs...)
}

func (v *validator) device(at string, raw, c *DeviceConfig, drivers map[string]Driver) {
	switch {
	case raw.Name == "":
		v.add(at+".name", "required")
	case !nameRE.MatchString(raw.Name):
		v.add(at+".name", "%q: use only letters, digits, '_' and '-'", raw.Name)
	}
	drv, known := drivers[c.Driver]
	switch {
	case c.Driver == "":
		v.add(at+".driver", "required (one of %s)", strings.Join(slices.Sorted(maps.Keys(drivers)), ", "))
	case !known:
		v.add(at+".driver", "unknown driver %q (known: %s)", c.Driver, strings.Join(slices.Sorted(maps.Keys(drivers)), ", "))
	}
	if c.Poll < 0 {
		v.add(at+".poll", "must be positive, got %s", c.Poll)
	}
	if c.Timeout < 0 {
		v.add(at+".timeout", "must be positive, got %s", c.Timeout)
	}
	if c.Retries != nil && *c.Retries < 0 {
		v.add(at+".retries", "must be 0 or more, got %d", *c.Retries)
	}
	if c.Heartbeat < 0 {
		v.add(at+".heartbeat", "must be 0 (never) or positive, got %s", c.Heartbeat)
	}
	v.qos(at+".qos", c.QoS)
	if c.Payload != "json" && c.Payload != "value" {
		v.add(at+".payload", "%q: must be json or value", c.Payload)
	}
	for _, name := range slices.Sorted(maps.Keys(c.Vars)) {
		switch {
		case !varName.MatchString(name):
			v.add(at+".vars."+name, "invalid variable name: use letters, digits and '_'")
		case slices.Contains(reservedVars, name):
			v.add(at+".vars."+name, "{%s} is set by the gateway and cannot be redefined", name)
		case strings.ContainsAny(c.Vars[name], "+#{}\x00"):
			v.add(at+".vars."+name, "value %q contains '+', '#', '{', '}' or NUL", c.Vars[name])
		}
	}
	devTmpl := v.template(at+".topic", c, c.Topic, true)
	v.driverKeys(at, raw, c)

	if len(c.Points) == 0 {
		v.add(at+".points", "a device needs at least one point")
	}
	pointNames := map[string]int{}
	topics := map[string]string{}
	if devTmpl != nil {
		if root, ok := devTmpl.expandRoot(c.lookup("gateway", "")); ok {
			topics[root+"/availability"] = "the device's availability topic"
		}
	}
	noWrites := false
	if ws, ok := drv.(WriteSupporter); ok && known && !ws.SupportsWrite() {
		noWrites = true
	}
	for j := range c.Points {
		p := &c.Points[j]
		pat := fmt.Sprintf("%s.points[%d]", at, j)
		switch {
		case p.Name == "":
			v.add(pat+".name", "required")
		case !nameRE.MatchString(p.Name):
			v.add(pat+".name", "%q: use only letters, digits, '_' and '-'", p.Name)
		}
		k, dup := pointNames[p.Name]
		if dup && p.Name != "" {
			v.add(pat+".name", "duplicate point name %q (also points[%d])", p.Name, k)
		} else {
			pointNames[p.Name] = j
		}
		v.point(pat, &raw.Points[j], p, c)
		if noWrites && p.Writable {
			v.add(pat+".writable", "driver %s does not support writes", c.Driver)
		}
		override := j < len(raw.Points) && raw.Points[j].Topic != "" && raw.Points[j].Topic != c.Topic
		if override {
			v.template(pat+".topic", c, p.Topic, false)
		}
		if t, err := parseTemplate(p.Topic); err == nil && !dup && p.Name != "" && nameRE.MatchString(p.Name) && c.checkVars(t) == nil {
			topic := t.expand(c.lookup("gateway", p.Name))
			if other, dup := topics[topic]; dup {
				v.add(pat+".topic", "topic %q is also used by %s", topic, other)
			} else {
				topics[topic] = fmt.Sprintf("point %s", p.Name)
			}
		}
	}
	switch c.Driver {
	case "sim":
		for j := range c.Points {
			v.sim(fmt.Sprintf("%s.points[%d]", at, j), &c.Points[j])
		}
	case "serial":
		if c.Port != "" && c.USB != nil {
			v.add(at+".usb", "set either port or usb, not both")
		}
		if c.USB != nil {
			if !hex4RE.MatchString(c.USB.VID) {
				v.add(at+".usb.vid", "%q: must be 4 hex digits, as lsusb prints it", c.USB.VID)
			}
			if !hex4RE.MatchString(c.USB.PID) {
				v.add(at+".usb.pid", "%q: must be 4 hex digits, as lsusb prints it", c.USB.PID)
			}
		}
		if c.Port != "" || c.USB != nil {
			v.serialLine(at, c)
		}
		v.serialDevice(at, c)
	}
	if dv, ok := drv.(DeviceValidator); ok && known {
		reported := map[string]bool{}
		for _, e := range v.errs {
			reported[e.(*FieldError).Path] = true
		}
		for _, fe := range dv.ValidateDevice(c) {
			if fe == nil {
				continue
			}
			path := fe.Path
			if path != "" && !strings.HasPrefix(path, "[") {
				path = "." + path
			}
			if reported[at+path] {
				continue // the generic check said it already
			}
			v.errs = append(v.errs, &FieldError{Path: at + path, Msg: fe.Msg})
		}
	}
}

func (v *validator) qos(path string, q *int) {
	if q != nil && (*q < 0 || *q > 2) {
		v.add(path, "must be 0, 1 or 2, got %d", *q)
	}
}

// template checks a topic template; device-level templates must contain
// {point} below the first level. It returns the parsed template when it
// can be used to compute topics.
func (v *validator) template(path string, c *DeviceConfig, s string, device bool) *template {
	t, err := parseTemplate(s)
	if err != nil {
		v.add(path, "%q: %v", s, err)
		return nil
	}
	if err := c.checkVars(t); err != nil {
		v.add(path, "%q: %v", s, err)
		return nil
	}
	if device {
		if _, ok := t.expandRoot(c.lookup("gateway", "point")); !ok {
			v.add(path, "%q: must contain {point} below the first topic level (the level before it is the device's root, which gets /availability)", s)
			return nil
		}
	}
	if err := checkTopic(t.expand(c.lookup("gateway", "point"))); err != nil {
		v.add(path, "%q: %v", s, err)
		return nil
	}
	return t
}

// checkVars rejects variables that are neither reserved nor in c.Vars.
func (c *DeviceConfig) checkVars(t *template) error {
	for _, name := range t.vars() {
		if _, ok := c.Vars[name]; !ok && !slices.Contains(reservedVars, name) {
			known := append(slices.Clone(reservedVars), slices.Sorted(maps.Keys(c.Vars))...)
			return fmt.Errorf("unknown variable {%s} (known: %s)", name, strings.Join(known, ", "))
		}
	}
	return nil
}

// lookup returns the template variable function for this device and point.
func (c *DeviceConfig) lookup(gateway, point string) func(string) string {
	return func(name string) string {
		switch name {
		case "gateway":
			return gateway
		case "device":
			return c.Name
		case "point":
			return point
		}
		return c.Vars[name]
	}
}

// point checks a point's generic keys; raw is the point as given. Poll,
// heartbeat and qos equal to the device's (inherited, also when the caller
// applied Defaults already) are reported on the device only.
func (v *validator) point(at string, raw, p *PointConfig, c *DeviceConfig) {
	if raw.Poll < 0 && raw.Poll != c.Poll {
		v.add(at+".poll", "must be positive, got %s", raw.Poll)
	}
	if raw.Heartbeat != nil && *raw.Heartbeat < 0 && *raw.Heartbeat != c.Heartbeat {
		v.add(at+".heartbeat", "must be 0 (never) or positive, got %s", *raw.Heartbeat)
	}
	if raw.QoS != nil && (c.QoS == nil || *raw.QoS != *c.QoS) {
		v.qos(at+".qos", raw.QoS)
	}
	if p.Scale != nil && (*p.Scale == 0 || math.IsNaN(*p.Scale) || math.IsInf(*p.Scale, 0)) {
		v.add(at+".scale", "must be a non-zero finite number")
	}
	if math.IsNaN(p.Offset) || math.IsInf(p.Offset, 0) {
		v.add(at+".offset", "must be a finite number")
	}
	if p.Deadband < 0 || math.IsNaN(p.Deadband) {
		v.add(at+".deadband", "must be 0 or more")
	}
	if p.DeadbandPercent < 0 || math.IsNaN(p.DeadbandPercent) {
		v.add(at+".deadband_percent", "must be 0 or more")
	}
	if p.Min != nil && p.Max != nil && !(*p.Min <= *p.Max) {
		v.add(at+".max", "max (%g) is below min (%g)", *p.Max, *p.Min)
	}
	if !utf8.ValidString(p.Unit) {
		v.add(at+".unit", "not valid UTF-8")
	}
	if r := p.Valid; r != nil {
		switch {
		case r.Min == nil && r.Max == nil:
			v.add(at+".valid", "needs min, max or both, e.g. valid: {min: 0, max: 400}")
		case r.Min != nil && r.Max != nil && !(*r.Min <= *r.Max):
			v.add(at+".valid.max", "max (%g) is below min (%g)", *r.Max, *r.Min)
		}
	}
}

// driverKeys rejects keys of another driver (checked on the config as
// written, before defaults).
func (v *validator) driverKeys(at string, raw, c *DeviceConfig) {
	driver := c.Driver
	if driver != "modbus" && driver != "serial" && driver != "sim" {
		return // unknown drivers: reported already; their keys are theirs
	}
	not := func(path, key, only string) {
		v.add(path, "%s is only valid for driver %s", key, only)
	}
	if driver != "modbus" {
		if raw.Transport != "" {
			not(at+".transport", "transport", "modbus")
		}
		if raw.Address != "" {
			not(at+".address", "address", "modbus")
		}
		if raw.Unit != nil {
			not(at+".unit", "unit", "modbus")
		}
		if raw.MaxGap != nil {
			not(at+".max_gap", "max_gap", "modbus")
		}
		if raw.MaxRegisters != 0 {
			not(at+".max_registers", "max_registers", "modbus")
		}
		if raw.RequestPause != 0 {
			not(at+".request_pause", "request_pause", "modbus")
		}
		if raw.OneRequestPerPoint {
			not(at+".one_request_per_point", "one_request_per_point", "modbus")
		}
	}
	if driver != "serial" {
		if raw.Request != "" {
			not(at+".request", "request", "serial")
		}
		if raw.Parse != nil {
			not(at+".parse", "parse", "serial")
		}
		if raw.Terminator != "" {
			not(at+".terminator", "terminator", "serial")
		}
		if raw.MaxLineLength != 0 {
			not(at+".max_line_length", "max_line_length", "serial")
		}
	}
	if driver == "sim" {
		if raw.Port != "" {
			v.add(at+".port", "a sim device has no port")
		}
		if raw.USB != nil {
			v.add(at+".usb", "a sim device has no port")
		}
		if raw.Baud != 0 || raw.DataBits != 0 || raw.Parity != "" || raw.StopBits != 0 || raw.RS485 != nil {
			v.add(at, "a sim device has no serial line (baud, data_bits, parity, stop_bits, rs485)")
		}
	}
	for j := range raw.Points {
		p := &raw.Points[j]
		pat := fmt.Sprintf("%s.points[%d]", at, j)
		if driver != "modbus" {
			if p.Table != "" {
				not(pat+".table", "table", "modbus")
			}
			if p.Address != nil {
				not(pat+".address", "address", "modbus")
			}
			if p.Type != "" {
				not(pat+".type", "type", "modbus")
			}
			if p.Order != "" {
				not(pat+".order", "order", "modbus")
			}
			if p.Length != 0 {
				not(pat+".length", "length", "modbus")
			}
			if p.Bit != nil {
				not(pat+".bit", "bit", "modbus")
			}
		}
		if p.Key != "" && (driver != "serial" || raw.Parse == nil || raw.Parse.Regex != "") {
			v.add(pat+".key", "key is only valid for driver serial with parse: {kv: true} or {json: true} (a regex names its groups after the points)")
		}
		if driver != "sim" {
			if p.Sim != "" {
				not(pat+".sim", "sim", "sim")
			}
			if p.Period != 0 {
				not(pat+".period", "period", "sim")
			}
			if p.Value != nil {
				not(pat+".value", "value", "sim")
			}
			if p.Step != nil {
				not(pat+".step", "step", "sim")
			}
		}
	}
}

// serialLine checks the line settings of a device with a serial port.
func (v *validator) serialLine(at string, c *DeviceConfig) {
	if c.Port == "" && c.USB == nil {
		return
	}
	if c.Baud < 0 {
		v.add(at+".baud", "must be positive, got %d", c.Baud)
	}
	if c.DataBits < 5 || c.DataBits > 8 {
		v.add(at+".data_bits", "must be 5, 6, 7 or 8, got %d", c.DataBits)
	}
	switch c.Parity {
	case "N", "E", "O":
	default:
		v.add(at+".parity", "%q: must be N, E or O", c.Parity)
	}
	if c.StopBits != 1 && c.StopBits != 2 {
		v.add(at+".stop_bits", "must be 1 or 2, got %d", c.StopBits)
	}
	if c.Port != "" && !strings.HasPrefix(c.Port, "/") {
		v.add(at+".port", "%q: must be an absolute path such as /dev/serial/by-id/...", c.Port)
	}
}

func (v *validator) serialDevice(at string, c *DeviceConfig) {
	if c.Port == "" && c.USB == nil {
		v.add(at+".port", "required (or usb: {vid, pid, serial})")
	}
	if c.RS485 != nil {
		v.add(at+".rs485", "not supported by the serial driver (use an adapter with automatic direction control)")
	}
	if c.MaxLineLength < 0 || c.MaxLineLength > 1<<20 {
		v.add(at+".max_line_length", "must be between 1 and 1048576 bytes, got %d", c.MaxLineLength)
	}
	if c.Parse == nil {
		v.add(at+".parse", "required: one of regex, json or kv")
		return
	}
	n := 0
	if c.Parse.Regex != "" {
		n++
	}
	if c.Parse.JSON {
		n++
	}
	if c.Parse.KV {
		n++
	}
	if n != 1 {
		v.add(at+".parse", "set exactly one of regex, json or kv (got %d)", n)
	}
	if c.Parse.Regex == "" {
		return
	}
	re, err := regexp.Compile(c.Parse.Regex)
	if err != nil {
		v.add(at+".parse.regex", "does not compile: %v", err)
		return
	}
	groups := map[string]bool{}
	for _, g := range re.SubexpNames() {
		if g == "" {
			continue
		}
		groups[g] = true
	}
	if len(groups) == 0 {
		v.add(at+".parse.regex", "has no named groups (?P<point>...); each point needs one")
	}
	points := map[string]bool{}
	for j := range c.Points {
		points[c.Points[j].Name] = true
		if len(groups) > 0 && !groups[c.Points[j].Name] && c.Points[j].Name != "" {
			v.add(fmt.Sprintf("%s.points[%d].name", at, j), "no named group (?P<%s>...) in parse.regex", c.Points[j].Name)
		}
	}
	for _, g := range slices.Sorted(maps.Keys(groups)) {
		if !points[g] {
			v.add(at+".parse.regex", "named group %q is not a point of this device", g)
		}
	}
}

func (v *validator) sim(at string, p *PointConfig) {
	if p.Sim == "" {
		v.add(at+".sim", "required for driver sim (one of %s)", strings.Join(simKinds, ", "))
		return
	}
	if !slices.Contains(simKinds, p.Sim) {
		v.add(at+".sim", "%q: must be one of %s", p.Sim, strings.Join(simKinds, ", "))
		return
	}
	needRange := func() {
		if p.Min == nil {
			v.add(at+".min", "required for sim %s", p.Sim)
		}
		if p.Max == nil {
			v.add(at+".max", "required for sim %s", p.Sim)
		}
		if p.Min != nil && p.Max != nil && *p.Min == *p.Max {
			v.add(at+".max", "must be above min for sim %s", p.Sim)
		}
	}
	switch p.Sim {
	case "sine":
		needRange()
		if p.Period <= 0 {
			v.add(at+".period", "must be positive, got %s", p.Period)
		}
	case "random":
		needRange()
		if p.Step != nil && !(*p.Step > 0) {
			v.add(at+".step", "must be positive")
		}
	case "counter":
		if p.Step != nil && math.IsNaN(*p.Step) {
			v.add(at+".step", "must be a number")
		}
	case "constant":
		if p.Value == nil {
			v.add(at+".value", "required for sim constant")
		}
	}
	if p.Sim != "sine" && p.Period != 0 {
		v.add(at+".period", "only used by sim sine")
	}
}
