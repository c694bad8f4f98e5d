package broker

import (
	"slices"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// ClientInfo describes one connected network client, for the console.
type ClientInfo struct {
	ID       string
	Username string // empty when anonymous
	Remote   string // the client's address
	Listener string // the listener id it connected to
	// Protocol is the MQTT protocol level: 3 (3.1), 4 (3.1.1) or 5.
	Protocol      byte
	Subscriptions []string // its filters, sorted
	Inflight      int      // QoS 1/2 messages sent and not yet acknowledged
	Queued        int      // packets waiting in its write queue
}

// Clients returns the connected network clients, sorted by id. Safe for
// concurrent use; nil before Run.
func (b *Broker) Clients() []ClientInfo {
	srv := b.srv.Load()
	if srv == nil {
		return nil
	}
	var out []ClientInfo
	for _, cl := range srv.Clients.GetAll() {
		if cl.Net.Inline || cl.Closed() || strings.HasPrefix(cl.ID, InProcessPrefix) {
			continue
		}
		out = append(out, b.clientInfo(cl))
	}
	slices.SortFunc(out, func(a, c ClientInfo) int { return strings.Compare(a.ID, c.ID) })
	return out
}

func (b *Broker) clientInfo(cl *mqtt.Client) ClientInfo {
	cl.RLock()
	ci := ClientInfo{
		ID:       cl.ID,
		Username: string(cl.Properties.Username),
		Remote:   cl.Net.Remote,
		Listener: cl.Net.Listener,
		Protocol: cl.Properties.ProtocolVersion,
	}
	cl.RUnlock()
	if s := cl.State.Subscriptions; s != nil {
		for filter := range s.GetAll() {
			ci.Subscriptions = append(ci.Subscriptions, filter)
		}
		slices.Sort(ci.Subscriptions)
	}
	if in := cl.State.Inflight; in != nil {
		ci.Inflight = in.Len()
	}
	if f, ok := b.flows.Load(cl); ok && f.(*flow).out != nil {
		ci.Queued = len(f.(*flow).out)
	}
	return ci
}
