package broker

import (
	"strings"
)

// Topics owned by the gateway. Device readings and availability are
// published by the gateway itself and forwarded upstream as its own data; a
// network client allowed "myhome/#" could otherwise publish a device's
// readings or its retained availability in its name. A network client may
// publish on an owned topic only when an ACL rule that applies to it names
// that topic in its publish list as it is, without wildcards ("myhome/#"
// does not grant it). Wills count as publishes. In-process publishers are
// not affected.

// SetOwnedTopics replaces the set of topic names owned by in-process
// publishers (see above). Safe for concurrent use; nil or empty clears it.
func (b *Broker) SetOwnedTopics(topics []string) {
	m := make(map[string]struct{}, len(topics))
	for _, t := range topics {
		m[t] = struct{}{}
	}
	b.owned.Store(&m)
}

// ownedDenied reports whether a network client may not publish on topic
// because the gateway owns it.
func (b *Broker) ownedDenied(p *authPlan, user, clientID, topic string) bool {
	m := b.owned.Load()
	if m == nil {
		return false
	}
	if _, ok := (*m)[topic]; !ok {
		return false
	}
	for i := range p.acl {
		r := &p.acl[i]
		if r.Username != "*" && (user == "" || r.Username != user) {
			continue
		}
		if r.ClientID != "" && r.ClientID != clientID {
			continue
		}
		for _, f := range r.Publish {
			if strings.ContainsAny(f, "+#") {
				continue
			}
			if f, ok := expand(f, user, clientID); ok && f == topic {
				return false
			}
		}
	}
	return true
}
