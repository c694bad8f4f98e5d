package sparkplug

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
)

// Names of the node metrics fieldgate announces in NBIRTH.
const (
	MetricBdSeq   = "bdSeq"                // Int64: the birth/death sequence number of this connection
	MetricRebirth = "Node Control/Rebirth" // Boolean, false; a host writes true in an NCMD to ask for new births
	MetricBacklog = "Node Info/Backlog"    // UInt64: messages waiting in the store-and-forward buffer
	MetricVersion = "Node Info/Version"    // String: the fieldgate version
)

// Aliases of the node metrics. bdSeq has none: it is always sent by name
// (NDEATH, the MQTT will, is built before any birth). Aliases 1–15 are
// reserved for node metrics; device metrics start at FirstDeviceAlias.
const (
	AliasRebirth     uint64 = 1
	AliasBacklog     uint64 = 2
	AliasVersion     uint64 = 3
	FirstDeviceAlias uint64 = 16
)

// Device is one device as the births announce it. Its Name is the Sparkplug
// device id.
type Device struct {
	Name   string
	Points []Point
}

// Point is one device point, announced as a metric named Name.
type Point struct {
	Name     string
	DataType DataType // from DataTypeFor or DataTypeOf
	Writable bool     // DCMD may write it
}

// Sample is one reading of a point.
type Sample struct {
	Point string
	Value any       // nil: the point has no current value (is_null)
	Time  time.Time // sample time, becomes the metric timestamp
	// Historical marks a reading replayed from the store-and-forward
	// buffer (is_historical): hosts store it without updating the live tag.
	Historical bool
}

// NodeMetrics are the values of the node metrics in NBIRTH and NDATA.
type NodeMetrics struct {
	Backlog uint64
	Version string
}

// Message is an MQTT message to publish. NDEATH has QoS 1, every other
// message QoS 0; none is retained (specification v3.0).
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
}

// metric is one entry of the alias table.
type metric struct {
	device *deviceMetrics
	point  Point
	alias  uint64
}

type deviceMetrics struct {
	name    string
	metrics []*metric // in configuration order
	byName  map[string]*metric
}

// Node is the Sparkplug state of one edge node: its ids, the alias table
// built from the device map, the bdSeq of the current connection and the
// message sequence number. It builds every message at the moment the
// caller sends it, since that is when seq is assigned: NBIRTH takes seq 0,
// every later NDATA, DBIRTH, DDATA and DDEATH the next value, wrapping from
// 255 to 0. NDEATH carries no seq.
//
// Aliases are assigned in configuration order, devices first to last and
// points in their order, starting at FirstDeviceAlias, so the same device
// map always yields the same aliases; they are unique across the node.
//
// A Node is safe for concurrent use; callers that need messages in seq
// order on the wire must publish them in the order they built them.
type Node struct {
	group, edge string

	devices map[string]*deviceMetrics
	byAlias map[uint64]*metric

	mu        sync.Mutex
	bdSeq     uint64
	connected bool
	born      bool
	seq       uint8
}

// NewNode validates the ids and the device map and builds the alias table.
// cfg must be expanded (Config.Expand). Device names must be valid
// Sparkplug ids and unique, point names unique within their device and of
// a datatype this package encodes.
func NewNode(cfg Config, devices []Device) (*Node, error) {
	if err := CheckID(cfg.GroupID); err != nil {
		return nil, fmt.Errorf("group id: %w", err)
	}
	if err := CheckID(cfg.EdgeNodeID); err != nil {
		return nil, fmt.Errorf("edge node id: %w", err)
	}
	n := &Node{
		group:   cfg.GroupID,
		edge:    cfg.EdgeNodeID,
		devices: make(map[string]*deviceMetrics, len(devices)),
		byAlias: make(map[uint64]*metric),
	}
	alias := FirstDeviceAlias
	var errs []error
	for _, d := range devices {
		if err := CheckID(d.Name); err != nil {
			errs = append(errs, fmt.Errorf("device %q: %w", d.Name, err))
			continue
		}
		if _, dup := n.devices[d.Name]; dup {
			errs = append(errs, fmt.Errorf("device %q: duplicate device id", d.Name))
			continue
		}
		dm := &deviceMetrics{name: d.Name, byName: make(map[string]*metric, len(d.Points))}
		for _, p := range d.Points {
			switch {
			case p.Name == "":
				errs = append(errs, fmt.Errorf("device %q: a point has no name", d.Name))
				continue
			case dm.byName[p.Name] != nil:
				errs = append(errs, fmt.Errorf("device %q point %q: duplicate name", d.Name, p.Name))
				continue
			case !supported(p.DataType):
				errs = append(errs, fmt.Errorf("device %q point %q: datatype %s is not supported", d.Name, p.Name, p.DataType))
				continue
			}
			m := &metric{device: dm, point: p, alias: alias}
			alias++
			dm.metrics = append(dm.metrics, m)
			dm.byName[p.Name] = m
			n.byAlias[m.alias] = m
		}
		n.devices[d.Name] = dm
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return n, nil
}

// Alias returns the alias of a device point.
func (n *Node) Alias(device, point string) (uint64, bool) {
	d := n.devices[device]
	if d == nil {
		return 0, false
	}
	m := d.byName[point]
	if m == nil {
		return 0, false
	}
	return m.alias, true
}

func (n *Node) topic(t MessageType, device string) string {
	return Topic{Group: n.group, Type: t, EdgeNode: n.edge, Device: device}.String()
}

// Connect starts a new MQTT session with the given bdSeq (from
// BdSeqStore.Next) and returns the NDEATH to install as the CONNECT's will:
// QoS 1, not retained, carrying only the bdSeq metric. Births must follow
// before any other message.
func (n *Node) Connect(bdSeq uint64) (Message, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.bdSeq = bdSeq
	n.connected = true
	n.born = false
	return n.nDeathLocked(time.Time{})
}

// NDeath returns the NDEATH of the current session, for publishing before
// a clean disconnect (the broker does not send the will then). now is the
// payload timestamp.
func (n *Node) NDeath(now time.Time) (Message, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.connected {
		return Message{}, errors.New("NDEATH before Connect")
	}
	return n.nDeathLocked(now)
}

// nDeathLocked builds NDEATH. A will is built long before it is delivered,
// so a zero now leaves the payload timestamp out.
func (n *Node) nDeathLocked(now time.Time) (Message, error) {
	p := &Payload{Metrics: []*Payload_Metric{{
		Name:     ptr(MetricBdSeq),
		Datatype: ptr(uint32(DataType_Int64)),
		Value:    &Payload_Metric_LongValue{LongValue: n.bdSeq},
	}}}
	if !now.IsZero() {
		p.Timestamp = ptr(millis(now))
		p.Metrics[0].Timestamp = p.Timestamp
	}
	return n.message(NDeath, "", p, 1)
}

// NBirth returns the NBIRTH of the current session: seq 0, the bdSeq given
// to Connect, Node Control/Rebirth = false and the node metrics. now is
// the payload and metric timestamp. Calling it again (a rebirth) restarts
// seq at 0 with the same bdSeq.
func (n *Node) NBirth(now time.Time, nm NodeMetrics) (Message, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.connected {
		return Message{}, errors.New("NBIRTH before Connect")
	}
	ts := ptr(millis(now))
	p := &Payload{
		Timestamp: ts,
		Seq:       ptr(uint64(0)),
		Metrics: []*Payload_Metric{
			{Name: ptr(MetricBdSeq), Timestamp: ts, Datatype: ptr(uint32(DataType_Int64)), Value: &Payload_Metric_LongValue{LongValue: n.bdSeq}},
			{Name: ptr(MetricRebirth), Alias: ptr(AliasRebirth), Timestamp: ts, Datatype: ptr(uint32(DataType_Boolean)), Value: &Payload_Metric_BooleanValue{BooleanValue: false}},
		},
	}
	p.Metrics = append(p.Metrics, nodeMetrics(nm, ts, true)...)
	n.seq = 0
	n.born = true
	return n.message(NBirth, "", p, 0)
}

func nodeMetrics(nm NodeMetrics, ts *uint64, named bool) []*Payload_Metric {
	ms := []*Payload_Metric{
		{Alias: ptr(AliasBacklog), Timestamp: ts, Datatype: ptr(uint32(DataType_UInt64)), Value: &Payload_Metric_LongValue{LongValue: nm.Backlog}},
		{Alias: ptr(AliasVersion), Timestamp: ts, Datatype: ptr(uint32(DataType_String)), Value: &Payload_Metric_StringValue{StringValue: nm.Version}},
	}
	if named {
		ms[0].Name = ptr(MetricBacklog)
		ms[1].Name = ptr(MetricVersion)
	}
	return ms
}

// NData returns an NDATA with the node metrics (by alias) and the next seq.
func (n *Node) NData(now time.Time, nm NodeMetrics) (Message, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.bornLocked(); err != nil {
		return Message{}, err
	}
	ts := ptr(millis(now))
	p := &Payload{Timestamp: ts, Metrics: nodeMetrics(nm, ts, false)}
	return n.sequenced(NData, "", p)
}

func (n *Node) bornLocked() error {
	if !n.connected || !n.born {
		return errors.New("no NBIRTH in this session")
	}
	return nil
}

// DBirth returns the DBIRTH of a device: every metric of the device with
// name, alias, datatype and timestamp; the value and timestamp come from
// the point's sample (the last one in samples when there are several), a
// point without one is announced with is_null and timestamp now. now is
// also the payload timestamp.
func (n *Node) DBirth(device string, now time.Time, samples []Sample) (Message, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.bornLocked(); err != nil {
		return Message{}, err
	}
	d := n.devices[device]
	if d == nil {
		return Message{}, fmt.Errorf("DBIRTH: unknown device %q", device)
	}
	latest := make(map[string]Sample, len(samples))
	for _, s := range samples {
		if d.byName[s.Point] == nil {
			return Message{}, fmt.Errorf("DBIRTH device %q: unknown point %q", device, s.Point)
		}
		latest[s.Point] = s
	}
	p := &Payload{Timestamp: ptr(millis(now)), Metrics: make([]*Payload_Metric, 0, len(d.metrics))}
	for _, m := range d.metrics {
		s, ok := latest[m.point.Name]
		if !ok {
			s = Sample{Point: m.point.Name, Time: now}
		}
		pm, err := sampleMetric(m, s)
		if err != nil {
			return Message{}, fmt.Errorf("DBIRTH device %q: %w", device, err)
		}
		pm.Name = ptr(m.point.Name)
		p.Metrics = append(p.Metrics, pm)
	}
	return n.sequenced(DBirth, device, p)
}

// DData returns a DDATA with the samples, in the given order, by alias
// only. now is the payload timestamp.
func (n *Node) DData(device string, now time.Time, samples []Sample) (Message, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.bornLocked(); err != nil {
		return Message{}, err
	}
	d := n.devices[device]
	if d == nil {
		return Message{}, fmt.Errorf("DDATA: unknown device %q", device)
	}
	if len(samples) == 0 {
		return Message{}, fmt.Errorf("DDATA device %q: no samples", device)
	}
	p := &Payload{Timestamp: ptr(millis(now)), Metrics: make([]*Payload_Metric, 0, len(samples))}
	for _, s := range samples {
		m := d.byName[s.Point]
		if m == nil {
			return Message{}, fmt.Errorf("DDATA device %q: unknown point %q", device, s.Point)
		}
		pm, err := sampleMetric(m, s)
		if err != nil {
			return Message{}, fmt.Errorf("DDATA device %q: %w", device, err)
		}
		p.Metrics = append(p.Metrics, pm)
	}
	return n.sequenced(DData, device, p)
}

// DDeath returns the DDEATH of a device (no metrics, the next seq).
func (n *Node) DDeath(device string, now time.Time) (Message, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.bornLocked(); err != nil {
		return Message{}, err
	}
	if n.devices[device] == nil {
		return Message{}, fmt.Errorf("DDEATH: unknown device %q", device)
	}
	return n.sequenced(DDeath, device, &Payload{Timestamp: ptr(millis(now))})
}

func sampleMetric(m *metric, s Sample) (*Payload_Metric, error) {
	pm := &Payload_Metric{Alias: ptr(m.alias), Timestamp: ptr(millis(s.Time))}
	if s.Historical {
		pm.IsHistorical = ptr(true)
	}
	if err := setValue(pm, m.point.DataType, s.Value); err != nil {
		return nil, fmt.Errorf("point %q: %w", m.point.Name, err)
	}
	return pm, nil
}

// sequenced assigns the next seq to p and encodes it. The seq is only
// consumed when the message is built successfully.
func (n *Node) sequenced(t MessageType, device string, p *Payload) (Message, error) {
	next := n.seq + 1 // uint8: 255 wraps to 0
	p.Seq = ptr(uint64(next))
	msg, err := n.message(t, device, p, 0)
	if err != nil {
		return Message{}, err
	}
	n.seq = next
	return msg, nil
}

func (n *Node) message(t MessageType, device string, p *Payload, qos byte) (Message, error) {
	b, err := proto.Marshal(p)
	if err != nil {
		return Message{}, fmt.Errorf("encode %s: %w", t, err)
	}
	return Message{Topic: n.topic(t, device), Payload: b, QoS: qos}, nil
}

// millis is a Sparkplug timestamp: milliseconds since the Unix epoch, UTC.
func millis(t time.Time) uint64 {
	ms := t.UnixMilli()
	if ms < 0 {
		return 0
	}
	return uint64(ms)
}
