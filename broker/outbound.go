package broker

import (
	"reflect"
	"sync/atomic"
	"time"
	"unsafe"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Write-queue back-pressure (why QoS 0 messages were lost). mochi hands
// every delivery to the subscriber's write queue (max_queued_messages +
// max_inflight packets) and drops it when the queue is full. In-flight
// back-pressure (see policy) bounds what QoS 1/2 subscribers hold, but
// nothing bounded what a subscriber receiving at QoS 0 is sent: four
// publishers blasting QoS 0 at one subscriber made the broker drop 22–39 %
// of the messages (fieldgate-bench qos0-4x1) while the subscriber could
// have taken them all, a little later. mosquitto drops nothing there: it
// queues in memory without a bound.
//
// So a publish also waits, up to limits.delivery_wait, while the write
// queue of a subscriber it will be delivered to holds max_queued_messages
// packets or more (the max_inflight slots above that stay free for QoS 1/2
// messages), and once it waited it goes on when the queue is back to half
// that (hysteresis: otherwise every further publish would wait again for a
// single free slot). Publishers are slowed to their subscribers' pace (the
// broker stops reading from them, so TCP holds them back) and memory stays
// bounded. The waits cover every subscriber of a QoS 0 publish and the QoS
// 0 subscribers of a QoS 1/2 publish (its QoS 1/2 subscribers have the
// in-flight wait). A subscriber whose queue stays full for delivery_wait is
// not waited for again until its queue was seen empty: a dead connection
// must not hold every publisher until its keepalive runs out.
//
// mochi keeps the queue unexported (ClientState.outbound, a channel, in
// v2.7.9); outboundQueue reads the field through reflect once per
// connection. With a mochi that has no such field the waits are skipped
// (TestOutboundQueue fails first).

// outboundField locates ClientState.outbound; ok is false if mochi has no
// such field of the expected type.
var outboundField, outboundOK = func() (reflect.StructField, bool) {
	f, ok := reflect.TypeFor[mqtt.ClientState]().FieldByName("outbound")
	return f, ok && f.Type == reflect.TypeFor[chan *packets.Packet]()
}()

// outboundQueue returns cl's write queue, or nil if it cannot be found. The
// channel is made with the client and never replaced, so it may be kept;
// len and cap of a channel are safe to read concurrently.
func outboundQueue(cl *mqtt.Client) chan *packets.Packet {
	if !outboundOK {
		return nil
	}
	return *(*chan *packets.Packet)(unsafe.Add(unsafe.Pointer(&cl.State), outboundField.Offset))
}

// queuePollInterval is how often a publish waiting for a write queue checks
// it again. At 100k packets/s a subscriber drains 20 in that time; the low
// mark leaves it max_queued_messages/2 to send meanwhile.
const queuePollInterval = 200 * time.Microsecond

// waitForQueues waits until each subscriber of the plan (queues: every
// subscriber, for a QoS 0 publish; otherwise only those subscribed at QoS
// 0) and one member of each shared group has room in its write queue (see
// above).
func (h *policy) waitForQueues(pub *mqtt.Client, p *roomPlan, qos byte) {
	if p.nobody {
		return
	}
	srv := h.srv()
	w := roomWait{h: h}
	defer w.stop()
	ids := p.qos0
	if qos == 0 {
		ids = p.queues
	}
	for _, id := range ids {
		if cl, ok := srv.Clients.Get(id); ok && cl != pub {
			if !h.waitQueues(pub, &w, cl) {
				return
			}
		}
	}
	if qos > 0 {
		return // shared groups: picked by in-flight count (OnSelectSubscribers)
	}
	var members []*mqtt.Client
	for _, ids := range p.queueGroups {
		members = appendClients(members[:0], srv, ids, pub)
		if len(members) > 0 && !h.waitQueues(pub, &w, members...) {
			return
		}
	}
}

// waitQueues waits until one of the clients has room in its write queue (or
// is gone, or is not waited for). It returns false when the wait timed out
// or the broker is stopping.
func (h *policy) waitQueues(pub *mqtt.Client, w *roomWait, cls ...*mqtt.Client) bool {
	high := h.b.cfg.Limits.MaxQueuedMessages
	mark := high // the first check; after a wait, the low mark
	var tick *time.Ticker
	defer func() {
		if tick != nil {
			tick.Stop()
		}
	}()
	for {
		for _, cl := range cls {
			f, ok := h.b.flows.Load(cl)
			if !ok || cl.Closed() {
				return true // offline: messages queue in the session
			}
			ff := f.(*flow)
			if ff.out == nil {
				return true
			}
			n := len(ff.out)
			if ff.queueStalled.Load() {
				if n > 0 {
					return true
				}
				ff.queueStalled.Store(false)
			}
			if n < mark {
				return true
			}
		}
		if tick == nil {
			if bc, ok := pub.Net.Conn.(*batchConn); ok {
				bc.release() // held acknowledgements leave before the publisher waits
			}
			tick = time.NewTicker(queuePollInterval)
			mark = high / 2
		}
		select {
		case <-tick.C:
		case <-w.deadline():
			h.giveUp(cls, func(f *flow) *atomic.Bool { return &f.queueStalled },
				"subscriber not keeping up: delivering without waiting until its write queue empties; it may drop messages")
			return false
		case <-h.b.stopping:
			return false
		}
	}
}
