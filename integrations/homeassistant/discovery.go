package homeassistant

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/fieldgate/fieldgate/devices"
)

// Topics maps the gateway's local topics to the topics Home Assistant uses
// on its broker. The gateway implements it from the bridge's routes when
// Home Assistant listens upstream; nil means Home Assistant is on the local
// broker and sees every topic as it is.
type Topics interface {
	// State returns the topic Home Assistant receives messages published
	// locally on local as (forward routes), and whether any route carries it.
	State(local string) (string, bool)
	// Command returns a topic Home Assistant can publish on for the message
	// to arrive locally on local (subscribe routes), and whether one exists.
	Command(local string) (string, bool)
	// Publish returns the local topic to publish on for Home Assistant to
	// receive the message on remote (forward routes).
	Publish(remote string) (string, bool)
	// Receive returns the local topic a message Home Assistant publishes on
	// remote arrives on (subscribe routes).
	Receive(remote string) (string, bool)
}

// Options are what Build needs besides the section and the devices.
type Options struct {
	// Gateway is the gateway id ({gateway}); it names the gateway's Home
	// Assistant device and prefixes every unique_id.
	Gateway string
	// Version is fieldgate's version, for origin.sw_version and the
	// gateway device's sw_version; empty omits them.
	Version string
	// Availability is the gateway's own availability topic as Home
	// Assistant sees it ("online"/"offline", retained).
	Availability string
	// Topics maps local topics to Home Assistant's broker; nil: identity.
	Topics Topics
}

// Message is one retained discovery message.
type Message struct {
	Topic   string // local topic to publish on
	Remote  string // the topic as Home Assistant sees it
	Payload []byte // JSON; empty clears the entity
}

// Plan is the compiled discovery of one configuration: the messages to keep
// retained and the local topics of the lifecycle. It is immutable.
type Plan struct {
	Messages []Message
	// Status is the local topic Home Assistant's birth message arrives on.
	Status string
	// Availability is the local topic of the gateway's own retained
	// "online"/"offline", when the gateway publishes it itself (broker:
	// local); empty when the bridge's status topic serves.
	Availability string
	QoS          byte
}

// SupportURL names the project in origin.support_url.
const SupportURL = "https://github.com/fieldgate/fieldgate"

// Build compiles the discovery messages of devs (the compiled devices, in
// config order) and checks everything that depends on the device map and,
// for broker: upstream, on the routes. It returns every problem as
// errors.Join of *FieldError with paths from the file's root. cfg must be
// defaulted; Build does not call cfg.Validate.
func Build(cfg Config, devs []*devices.Device, opts Options) (*Plan, error) {
	b := &builder{cfg: cfg, opts: opts, ids: map[string]string{}}
	if b.opts.Topics == nil {
		b.opts.Topics = identity{}
	}
	plan := &Plan{QoS: byte(*cfg.QoS)}
	node := nodeID(opts.Gateway)
	b.node = node
	if st, ok := b.opts.Topics.Receive(cfg.StatusTopic); ok {
		plan.Status = st
	} else {
		b.add(section+".status_topic", "%q: no bridge.subscribe route brings Home Assistant's status messages down to the gateway (add a route whose filter matches it)", cfg.StatusTopic)
	}
	if cfg.Broker == BrokerLocal {
		plan.Availability = strings.ReplaceAll(cfg.AvailabilityTopic, "{gateway}", opts.Gateway)
	}
	gwAvail := availability{Topic: opts.Availability, PayloadAvailable: "online", PayloadNotAvailable: "offline"}

	b.gateway = device{
		Identifiers:   []string{"fieldgate_" + node},
		Name:          cmpOr(cfg.Name, opts.Gateway),
		Manufacturer:  "fieldgate",
		Model:         "fieldgate gateway",
		SWVersion:     opts.Version,
		SuggestedArea: cfg.Area,
	}
	b.origin = origin{Name: "fieldgate", SWVersion: opts.Version, SupportURL: SupportURL}

	// The gateway's own entity: its connectivity, without availability so
	// that a stopped gateway shows as disconnected rather than unavailable.
	b.message(section, "binary_sensor", "status", entity{
		Name:           "Status",
		UniqueID:       "fieldgate_" + node + "_status",
		StateTopic:     opts.Availability,
		PayloadOn:      "online",
		PayloadOff:     "offline",
		DeviceClass:    "connectivity",
		EntityCategory: "diagnostic",
		QoS:            1,
	}, b.gateway)

	for i, d := range devs {
		at := fmt.Sprintf("devices[%d]", i)
		ha := d.Config.HomeAssistant
		if ha != nil && ha.Enabled != nil && !*ha.Enabled {
			continue
		}
		dev := device{
			Identifiers:   []string{"fieldgate_" + node + "_" + d.Name()},
			Name:          d.Name(),
			Manufacturer:  d.Config.Manufacturer,
			Model:         d.Config.Model,
			SuggestedArea: cfg.Area,
			ViaDevice:     b.gateway.Identifiers[0],
		}
		if ha != nil {
			dev.Name = cmpOr(ha.Name, dev.Name)
			dev.SuggestedArea = cmpOr(ha.Area, dev.SuggestedArea)
		}
		avail, ok := b.opts.Topics.State(d.AvailabilityTopic)
		if !ok {
			b.add(at, "availability topic %q is not carried upstream by any bridge.forward route (integrations.homeassistant.broker is upstream)", d.AvailabilityTopic)
		}
		avails := []availability{gwAvail, {Topic: avail, PayloadAvailable: "online", PayloadNotAvailable: "offline"}}
		for j, p := range d.Points {
			b.point(fmt.Sprintf("%s.points[%d]", at, j), p, dev, avails)
		}
	}
	plan.Messages = b.msgs
	return plan, errors.Join(b.errs...)
}

type builder struct {
	cfg     Config
	opts    Options
	node    string
	gateway device
	origin  origin
	msgs    []Message
	errs    []error
	ids     map[string]string // object id → path that took it
}

func (b *builder) add(path, format string, args ...any) {
	b.errs = append(b.errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// message adds the retained config of one entity.
func (b *builder) message(at, component, objectID string, e entity, dev device) {
	if prev, taken := b.ids[objectID]; taken {
		b.add(at, "Home Assistant object id %q is also used by %s: rename one (device and point names are joined with '_')", objectID, prev)
		return
	}
	b.ids[objectID] = at
	e.Device = dev
	e.Origin = b.origin
	remote := b.cfg.DiscoveryPrefix + "/" + component + "/" + b.node + "/" + objectID + "/config"
	local, ok := b.opts.Topics.Publish(remote)
	if !ok {
		b.add(section+".broker", "upstream: discovery topic %q is not carried by any bridge.forward route (add one whose prefix and filter produce it, e.g. {filter: \"%s/#\", prefix: \"\"})", remote, b.cfg.DiscoveryPrefix)
		return
	}
	payload, err := json.Marshal(e)
	if err != nil { // only plain strings and numbers: cannot happen
		b.add(at, "discovery payload: %v", err)
		return
	}
	b.msgs = append(b.msgs, Message{Topic: local, Remote: remote, Payload: payload})
}

// kinds of point values.
const (
	kindNumber = "number"
	kindBool   = "bool"
	kindString = "string"
)

// valueKind says what a point's values are: Modbus points by their type,
// sim points by their generator, serial points are taken as numbers.
func valueKind(p *devices.Point) string {
	switch p.Device.Config.Driver {
	case "modbus":
		switch p.Config.Type {
		case "bool", "bit":
			return kindBool
		case "string":
			return kindString
		}
		if devices.IsBitTable(p.Config.Table) {
			return kindBool
		}
	case "sim":
		if p.Config.Sim == "toggle" {
			return kindBool
		}
	}
	return kindNumber
}

// point adds the entity of one point.
func (b *builder) point(at string, p *devices.Point, dev device, avails []availability) {
	ov := p.Config.HomeAssistant
	if ov == nil {
		ov = &devices.HomeAssistantPoint{}
	}
	if ov.Enabled != nil && !*ov.Enabled {
		return
	}
	oat := at + ".homeassistant"
	kind := valueKind(p)
	component, ok := b.component(oat, ov.Component, kind, p.Config.Writable)
	if !ok {
		return
	}
	state, ok := b.opts.Topics.State(p.Topic)
	if !ok {
		b.add(at, "topic %q is not carried upstream by any bridge.forward route (integrations.homeassistant.broker is upstream)", p.Topic)
	}
	e := entity{
		Name:             cmpOr(ov.Name, humanize(p.Name())),
		UniqueID:         "fieldgate_" + b.node + "_" + p.Device.Name() + "_" + p.Name(),
		StateTopic:       state,
		Icon:             ov.Icon,
		QoS:              *p.Config.QoS,
		Availability:     avails,
		AvailabilityMode: "all",
	}
	if ov.Icon != "" && !strings.Contains(ov.Icon, ":") {
		b.add(oat+".icon", "%q: want an icon name such as mdi:thermometer", ov.Icon)
	}
	if component == "number" || component == "switch" {
		cmd, ok := b.opts.Topics.Command(p.Topic + "/set")
		if !ok {
			b.add(at, "write topic %q cannot be reached from upstream: no bridge.subscribe route delivers a topic there (integrations.homeassistant.broker is upstream; homeassistant: {component: sensor} makes the entity read-only)", p.Topic+"/set")
		}
		e.CommandTopic = cmd
	}
	jsonPayload := p.Device.Config.Payload != "value"
	switch component {
	case "binary_sensor", "switch":
		b.onOff(oat, component, kind, jsonPayload, ov, &e)
	case "sensor":
		if jsonPayload {
			e.ValueTemplate = valueTemplate
		}
		uc := b.classes(oat, component, kind, p, ov, &e)
		if sc := uc.stateClass; sc != "" && !stateClasses[sc] {
			b.add(oat+".state_class", "%q: want measurement, total, total_increasing or none", sc)
		}
		if meterClasses[uc.deviceClass] && uc.stateClass == "measurement" {
			b.add(oat+".state_class", "device_class %s needs state_class total or total_increasing (Home Assistant refuses measurement, and the Energy dashboard lists only totals)", uc.deviceClass)
		}
		if kind == kindString && ov.StateClass != "" && ov.StateClass != "none" {
			b.add(oat+".state_class", "a string point has no state class")
		}
		if kind == kindNumber {
			e.StateClass = uc.stateClass
		}
	case "number":
		if jsonPayload {
			e.ValueTemplate = valueTemplate
		}
		b.classes(oat, component, kind, p, ov, &e)
		if ov.StateClass != "" && ov.StateClass != "none" {
			b.add(oat+".state_class", "only sensor entities have a state class")
		}
		b.numberRange(at, oat, p, ov, &e)
	}
	b.message(at, component, p.Device.Name()+"_"+p.Name(), e, dev)
}

// component picks the entity type of a point: bool → binary_sensor
// (writable: switch), number → sensor (writable: number), string → sensor,
// or the override when it fits the point.
func (b *builder) component(oat, override, kind string, writable bool) (string, bool) {
	switch override {
	case "":
		switch {
		case kind == kindBool && writable:
			return "switch", true
		case kind == kindBool:
			return "binary_sensor", true
		case kind == kindNumber && writable:
			return "number", true
		}
		return "sensor", true
	case "sensor":
		return override, true
	case "binary_sensor":
		if kind == kindString {
			b.add(oat+".component", "binary_sensor needs a bool or number point, this one is a string")
			return "", false
		}
		return override, true
	case "number":
		if kind != kindNumber || !writable {
			b.add(oat+".component", "number needs a writable numeric point")
			return "", false
		}
		return override, true
	case "switch":
		if kind != kindBool || !writable {
			b.add(oat+".component", "switch needs a writable bool point")
			return "", false
		}
		return override, true
	}
	b.add(oat+".component", "%q: want sensor, binary_sensor, number or switch", override)
	return "", false
}

// onOff fills the fields of a binary_sensor or switch: "true"/"false" as
// payloads (what /set accepts and what a bool reading looks like), a
// template unless the payload is already that bare text, and the device
// class override.
func (b *builder) onOff(oat, component, kind string, jsonPayload bool, ov *devices.HomeAssistantPoint, e *entity) {
	e.PayloadOn, e.PayloadOff = "true", "false"
	if jsonPayload || kind != kindBool {
		e.ValueTemplate = boolTemplate(jsonPayload)
	}
	if ov.StateClass != "" && ov.StateClass != "none" {
		b.add(oat+".state_class", "only sensor entities have a state class")
	}
	classes := binaryClasses
	if component == "switch" {
		classes = switchClasses
	}
	if dc := ov.DeviceClass; dc != "" && dc != "none" {
		if !classes[dc] {
			b.add(oat+".device_class", "%q is not a Home Assistant %s device class", dc, component)
		}
		e.DeviceClass = dc
	}
}

// classes sets the unit and device class of a sensor or number entity,
// derived from the point's unit and name unless overridden, and returns
// them with the state class (derived or overridden, "" for none).
func (b *builder) classes(oat, component, kind string, p *devices.Point, ov *devices.HomeAssistantPoint, e *entity) unitClass {
	unit := normUnit(p.Config.Unit)
	if ov.Unit != "" {
		unit = ov.Unit
	}
	var uc unitClass
	if kind == kindNumber {
		uc = deriveClass(unit, p.Name())
		if rhUnits[p.Config.Unit] && ov.Unit == "" {
			uc = unitClass{"humidity", "measurement"}
		}
	}
	if dc := ov.DeviceClass; dc != "" {
		uc.deviceClass = dc
		if dc == "none" {
			uc.deviceClass = ""
		}
	}
	if sc := ov.StateClass; sc != "" {
		uc.stateClass = sc
		if sc == "none" {
			uc.stateClass = ""
		}
	}
	valid := sensorClasses
	if component == "number" {
		valid = numberClasses
	}
	if dc := uc.deviceClass; dc != "" && !valid[dc] {
		b.add(oat+".device_class", "%q is not a Home Assistant %s device class", dc, component)
	}
	e.Unit, e.DeviceClass = unit, uc.deviceClass
	return uc
}

// Value templates. A JSON payload without "value" is a bad-quality reading
// ({"quality":"bad",…}): the template renders "None", which Home Assistant's
// MQTT entities take as "unknown", so a failed read never shows as a number.
// `payload: value` points publish nothing on a bad read, so their bare
// payload needs no template.
const valueTemplate = "{% if value_json.value is defined %}{{ value_json.value }}{% else %}None{% endif %}"

func boolTemplate(jsonPayload bool) string {
	if jsonPayload {
		return "{% if value_json.value is defined %}{{ 'true' if value_json.value else 'false' }}{% else %}None{% endif %}"
	}
	// A bare number (a bool override on a numeric point): non-zero is on.
	return "{{ 'true' if value | float(0) != 0 or value == 'true' else 'false' }}"
}

// numberRange sets min, max and step of a number entity: the point's write
// limits when set, else the range its register type can hold after scale
// and offset; the step is the scale (1 for plain integers, 0.001 for
// floats), or the override.
func (b *builder) numberRange(at, oat string, p *devices.Point, ov *devices.HomeAssistantPoint, e *entity) {
	c := p.Config
	scale := 1.0
	if c.Scale != nil {
		scale = *c.Scale
	}
	lo, hi, integer := typeRange(c.Type)
	if !math.IsInf(lo, 0) {
		lo, hi = lo*scale+c.Offset, hi*scale+c.Offset
		if lo > hi {
			lo, hi = hi, lo
		}
	}
	if c.Min != nil {
		lo = *c.Min
	}
	if c.Max != nil {
		hi = *c.Max
	}
	if math.IsInf(lo, 0) || math.IsInf(hi, 0) {
		b.add(at, "a writable %s point needs min and max for its Home Assistant number entity", cmpOr(c.Type, "numeric"))
		return
	}
	step := 0.001
	if integer {
		step = math.Max(math.Abs(scale), 0.001)
	}
	if ov.Step != nil {
		if !(*ov.Step >= 0.001) {
			b.add(oat+".step", "%g: Home Assistant's smallest step is 0.001", *ov.Step)
		}
		step = *ov.Step
	}
	switch ov.Mode {
	case "", "auto", "box", "slider":
	default:
		b.add(oat+".mode", "%q: want auto, box or slider", ov.Mode)
	}
	e.Min, e.Max, e.Step, e.Mode = &lo, &hi, &step, ov.Mode
}

// typeRange is the raw range of a register type; ±Inf when unbounded for
// practical purposes (floats) or unknown (drivers without types).
func typeRange(typ string) (lo, hi float64, integer bool) {
	switch typ {
	case "int16":
		return math.MinInt16, math.MaxInt16, true
	case "uint16":
		return 0, math.MaxUint16, true
	case "int32":
		return math.MinInt32, math.MaxInt32, true
	case "uint32":
		return 0, math.MaxUint32, true
	case "int64":
		return math.MinInt64, math.MaxInt64, true
	case "uint64":
		return 0, math.MaxUint64, true
	}
	return math.Inf(-1), math.Inf(1), false
}

// nodeID makes the gateway id a valid discovery node_id ([a-zA-Z0-9_-]).
func nodeID(gw string) string {
	return strings.Map(func(r rune) rune {
		if r == '-' || r == '_' || r < utf8.RuneSelf && (unicode.IsLetter(r) || unicode.IsDigit(r)) {
			return r
		}
		return '_'
	}, gw)
}

// humanize turns a point name into an entity name: "flow_rate" → "Flow rate".
func humanize(name string) string {
	s := strings.NewReplacer("_", " ", "-", " ").Replace(name)
	r, n := utf8.DecodeRuneInString(s)
	return string(unicode.ToUpper(r)) + s[n:]
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

type identity struct{}

func (identity) State(t string) (string, bool)   { return t, true }
func (identity) Command(t string) (string, bool) { return t, true }
func (identity) Publish(t string) (string, bool) { return t, true }
func (identity) Receive(t string) (string, bool) { return t, true }

// entity is a discovery payload; field names are Home Assistant's (the
// long forms, not the abbreviations) and the order is the output's.
type entity struct {
	Name             string         `json:"name"`
	UniqueID         string         `json:"unique_id"`
	StateTopic       string         `json:"state_topic"`
	ValueTemplate    string         `json:"value_template,omitempty"`
	CommandTopic     string         `json:"command_topic,omitempty"`
	PayloadOn        string         `json:"payload_on,omitempty"`
	PayloadOff       string         `json:"payload_off,omitempty"`
	DeviceClass      string         `json:"device_class,omitempty"`
	StateClass       string         `json:"state_class,omitempty"`
	Unit             string         `json:"unit_of_measurement,omitempty"`
	Min              *float64       `json:"min,omitempty"`
	Max              *float64       `json:"max,omitempty"`
	Step             *float64       `json:"step,omitempty"`
	Mode             string         `json:"mode,omitempty"`
	Icon             string         `json:"icon,omitempty"`
	EntityCategory   string         `json:"entity_category,omitempty"`
	QoS              int            `json:"qos"`
	Availability     []availability `json:"availability,omitempty"`
	AvailabilityMode string         `json:"availability_mode,omitempty"`
	Device           device         `json:"device"`
	Origin           origin         `json:"origin"`
}

type availability struct {
	Topic               string `json:"topic"`
	PayloadAvailable    string `json:"payload_available"`
	PayloadNotAvailable string `json:"payload_not_available"`
}

type device struct {
	Identifiers   []string `json:"identifiers"`
	Name          string   `json:"name"`
	Manufacturer  string   `json:"manufacturer,omitempty"`
	Model         string   `json:"model,omitempty"`
	SWVersion     string   `json:"sw_version,omitempty"`
	SuggestedArea string   `json:"suggested_area,omitempty"`
	ViaDevice     string   `json:"via_device,omitempty"`
}

type origin struct {
	Name       string `json:"name"`
	SWVersion  string `json:"sw_version,omitempty"`
	SupportURL string `json:"support_url"`
}
