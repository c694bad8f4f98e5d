package broker

import (
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// roomPlan is what delivery flow control (policy.waitForQueues) needs to
// know about one topic: the ids of its subscribers (queues) and of the
// members of each shared-subscription group (queueGroups), whose write
// queues a publish waits for. It also tells the ingress lines whether a
// message on the topic has anyone to go to at all.
type roomPlan struct {
	queues      []string
	queueGroups [][]string
	// nobody: no subscription of any kind (client, shared or in-process)
	// matches the topic, so delivering a message on it does nothing.
	nobody bool
}

// maxRoomPlans bounds roomCache; when full it is emptied.
const maxRoomPlans = 4096

// roomCache holds a roomPlan per topic, so that a publish does not
// walk the topic index (allocating a fresh subscriber set) a second time on
// top of mochi's own walk for delivery. Every change of the topic index is
// followed by invalidate (the policy's OnSubscribed and OnUnsubscribed hooks,
// which mochi calls after changing the index), and a plan computed while the
// index changed is never stored, so a stored plan is always that of the
// current index. Safe for concurrent use.
type roomCache struct {
	mu    sync.RWMutex
	gen   uint64
	plans map[string]*roomPlan
}

// plan returns the plan for topic, computing it from srv's topic index when
// it is not cached.
func (c *roomCache) plan(srv *mqtt.Server, topic string) *roomPlan {
	c.mu.RLock()
	p, ok := c.plans[topic]
	gen := c.gen
	c.mu.RUnlock()
	if ok {
		return p
	}
	subs := srv.Topics.Subscribers(topic)
	p = &roomPlan{nobody: len(subs.Subscriptions) == 0 && len(subs.Shared) == 0 && len(subs.InlineSubscriptions) == 0}
	for id := range subs.Subscriptions {
		p.queues = append(p.queues, id)
	}
	for _, group := range subs.Shared {
		var all []string
		for id := range group {
			all = append(all, id)
		}
		if len(all) > 0 {
			p.queueGroups = append(p.queueGroups, all)
		}
	}
	c.mu.Lock()
	if c.gen == gen {
		if c.plans == nil || len(c.plans) >= maxRoomPlans {
			c.plans = make(map[string]*roomPlan)
		}
		c.plans[topic] = p
	}
	c.mu.Unlock()
	return p
}

// invalidate forgets every plan; call it after the topic index changed.
func (c *roomCache) invalidate() {
	c.mu.Lock()
	c.gen++
	c.plans = nil
	c.mu.Unlock()
}
