package sparkplug

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
)

// maxStatePayload bounds the STATE payloads ParseState accepts.
const maxStatePayload = 4096

// State is the payload of a host application's STATE message
// (specification v3.0): UTF-8 JSON {"online": true|false, "timestamp": ms},
// published retained with QoS 1. The host's birth and its will carry the
// same timestamp, the time it connected.
type State struct {
	Online    bool
	Timestamp uint64 // ms since the Unix epoch, UTC
}

// ParseState parses a STATE payload. Both keys are required; other keys
// are ignored. It is safe for any input.
func ParseState(payload []byte) (State, error) {
	if len(payload) > maxStatePayload {
		return State{}, fmt.Errorf("STATE payload is %d bytes, limit %d", len(payload), maxStatePayload)
	}
	var raw struct {
		Online    *bool        `json:"online"`
		Timestamp *json.Number `json:"timestamp"`
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return State{}, fmt.Errorf("STATE payload is not a JSON object: %w", err)
	}
	if dec.More() {
		return State{}, errors.New("STATE payload has data after the JSON object")
	}
	if raw.Online == nil {
		return State{}, errors.New(`STATE payload has no boolean "online"`)
	}
	if raw.Timestamp == nil {
		return State{}, errors.New(`STATE payload has no "timestamp"`)
	}
	var ts uint64
	if _, err := fmt.Sscan(raw.Timestamp.String(), &ts); err != nil || fmt.Sprint(ts) != raw.Timestamp.String() {
		return State{}, fmt.Errorf("STATE timestamp %s is not a non-negative integer of milliseconds", raw.Timestamp)
	}
	return State{Online: *raw.Online, Timestamp: ts}, nil
}

// HostTracker follows the STATE messages of the primary host application
// and says whether the node may publish. A message older than the latest
// one accepted (by its timestamp) is ignored: it is the will of a host
// session that has already been replaced. Until the first valid STATE
// arrives, the host counts as offline: an edge node with a primary host
// waits for online=true before its births.
//
// A HostTracker is safe for concurrent use.
type HostTracker struct {
	topic string

	mu     sync.Mutex
	seen   bool
	latest State
}

// NewHostTracker returns a tracker for the host application hostID.
func NewHostTracker(hostID string) (*HostTracker, error) {
	if err := CheckID(hostID); err != nil {
		return nil, fmt.Errorf("primary host id: %w", err)
	}
	return &HostTracker{topic: StateTopic(hostID)}, nil
}

// Topic is the STATE topic to subscribe to.
func (h *HostTracker) Topic() string { return h.topic }

// Update applies a message received on topic. It returns whether the host
// is online afterwards and whether that changed; a message on another
// topic or with a malformed payload is an error and changes nothing.
func (h *HostTracker) Update(topic string, payload []byte) (online, changed bool, err error) {
	if topic != h.topic {
		return h.Online(), false, fmt.Errorf("STATE on %q, want %q", topic, h.topic)
	}
	s, err := ParseState(payload)
	if err != nil {
		return h.Online(), false, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.seen && s.Timestamp < h.latest.Timestamp {
		return h.latest.Online, false, nil
	}
	changed = !h.seen && s.Online || h.seen && s.Online != h.latest.Online
	h.seen, h.latest = true, s
	return s.Online, changed, nil
}

// Online reports whether the latest accepted STATE said online.
func (h *HostTracker) Online() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seen && h.latest.Online
}
