package sparkplug

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Namespace is the first topic level of every Sparkplug B v3.0 topic.
const Namespace = "spBv1.0"

// MessageType is the third level of a Sparkplug topic.
type MessageType string

// The message types of an edge node and its devices.
const (
	NBirth MessageType = "NBIRTH"
	NDeath MessageType = "NDEATH"
	DBirth MessageType = "DBIRTH"
	DDeath MessageType = "DDEATH"
	NData  MessageType = "NDATA"
	DData  MessageType = "DDATA"
	NCmd   MessageType = "NCMD"
	DCmd   MessageType = "DCMD"
)

// deviceLevel reports whether topics of type t carry a device id.
func (t MessageType) deviceLevel() bool {
	switch t {
	case DBirth, DDeath, DData, DCmd:
		return true
	}
	return false
}

func (t MessageType) known() bool {
	switch t {
	case NBirth, NDeath, DBirth, DDeath, NData, DData, NCmd, DCmd:
		return true
	}
	return false
}

// Topic is a parsed edge node or device topic:
// spBv1.0/<Group>/<Type>/<EdgeNode>[/<Device>].
type Topic struct {
	Group    string
	Type     MessageType
	EdgeNode string
	Device   string // empty for node messages
}

// String returns the topic name. It does not validate the ids.
func (t Topic) String() string {
	s := Namespace + "/" + t.Group + "/" + string(t.Type) + "/" + t.EdgeNode
	if t.Device != "" {
		s += "/" + t.Device
	}
	return s
}

// StateTopic is the topic on which the primary host application with id
// hostID publishes its (retained) online state: spBv1.0/STATE/<host id>.
func StateTopic(hostID string) string {
	return Namespace + "/STATE/" + hostID
}

// ParseTopic parses an edge node or device topic. It rejects STATE topics,
// unknown message types, a device level on a node message (or its absence
// on a device message) and invalid ids.
func ParseTopic(s string) (Topic, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 4 || parts[0] != Namespace {
		return Topic{}, fmt.Errorf("topic %q: not %s/<group>/<type>/<edge node>[/<device>]", s, Namespace)
	}
	t := Topic{Group: parts[1], Type: MessageType(parts[2]), EdgeNode: parts[3]}
	if !t.Type.known() {
		return Topic{}, fmt.Errorf("topic %q: unknown message type %q", s, parts[2])
	}
	want := 4
	if t.Type.deviceLevel() {
		want = 5
	}
	if len(parts) != want {
		return Topic{}, fmt.Errorf("topic %q: %s topics have %d levels, got %d", s, t.Type, want, len(parts))
	}
	if want == 5 {
		t.Device = parts[4]
	}
	for _, id := range []struct{ what, v string }{{"group id", t.Group}, {"edge node id", t.EdgeNode}, {"device id", t.Device}} {
		if id.what == "device id" && want == 4 {
			continue
		}
		if err := CheckID(id.v); err != nil {
			return Topic{}, fmt.Errorf("topic %q: %s: %w", s, id.what, err)
		}
	}
	return t, nil
}

// CheckID reports whether s may be a Sparkplug group, edge node, device or
// host id: a non-empty UTF-8 string without the MQTT separators and
// wildcards '/', '+' and '#' (specification v3.0, "Topic Namespace
// Elements").
func CheckID(s string) error {
	switch {
	case s == "":
		return errors.New("must not be empty")
	case !utf8.ValidString(s):
		return errors.New("is not valid UTF-8")
	case strings.ContainsAny(s, "/+#"):
		return fmt.Errorf("%q must not contain '/', '+' or '#'", s)
	case strings.ContainsRune(s, 0):
		return fmt.Errorf("%q must not contain NUL", s)
	}
	return nil
}
