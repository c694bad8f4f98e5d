package devices

import "context"

// Device is a validated, compiled device: its config with defaults applied and
// its points. It is immutable once built by New; drivers read it.
type Device struct {
	Config DeviceConfig
	Points []*Point
	// AvailabilityTopic carries the device's retained "online"/"offline".
	AvailabilityTopic string
}

// Name is the device's name ({device} in topics).
func (d *Device) Name() string { return d.Config.Name }

// Point is a compiled point of a device. Immutable once built.
type Point struct {
	Config PointConfig
	Device *Device
	Index  int    // position in Device.Points
	Topic  string // the expanded topic its values are published on; writes arrive on Topic+"/set"
}

// Name is the point's name ({point} in topics).
func (p *Point) Name() string { return p.Config.Name }

// Message is what the devices package publishes and receives on the local
// broker.
type Message struct {
	Topic           string
	Payload         []byte
	QoS             byte
	Retain          bool
	ResponseTopic   string // MQTT 5 request/response, on write requests
	CorrelationData []byte
}

// Publisher delivers messages to the local broker. For QoS ≥ 1 it returns
// only once the message is durable where a forward route asks for it (G1).
type Publisher interface {
	Publish(ctx context.Context, m Message) error
}

// Subscriber delivers messages published on the local broker that match a
// filter. fn must not block for long: it is called on the broker's goroutine.
type Subscriber interface {
	Subscribe(filter string, fn func(Message)) (unsubscribe func(), err error)
}

// FieldError is one configuration problem. Path is relative to the
// `devices` list, e.g. "[2].points[5].address".
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// FieldPath returns the YAML path of the problem, relative to `devices`.
func (e *FieldError) FieldPath() string { return e.Path }
