package broker

import (
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// authPlan is an immutable, compiled AuthConfig; SetAuth swaps it atomically.
type authPlan struct {
	anonymous bool
	users     map[string][]byte // username → bcrypt hash
	dummy     []byte            // hash at the users' cost, compared for unknown usernames
	acl       []ACLRule         // empty: allow everything
}

func compileAuth(a AuthConfig) *authPlan {
	p := &authPlan{anonymous: a.Anonymous, users: make(map[string][]byte, len(a.Users))}
	for _, u := range a.Users {
		p.users[u.Username] = []byte(u.PasswordHash)
	}
	if len(a.Users) > 0 {
		// An unknown username costs as much as a wrong password, so
		// usernames cannot be probed by timing.
		cost, err := bcrypt.Cost([]byte(a.Users[0].PasswordHash))
		if err != nil {
			cost = bcrypt.DefaultCost
		}
		p.dummy, _ = bcrypt.GenerateFromPassword([]byte("fieldgate"), cost)
	}
	p.acl = append([]ACLRule(nil), a.ACL...)
	return p
}

// authenticate checks CONNECT credentials. An empty username is anonymous.
func (p *authPlan) authenticate(username string, password []byte) bool {
	if username == "" {
		return p.anonymous
	}
	hash, ok := p.users[username]
	if !ok {
		if p.dummy != nil {
			_ = bcrypt.CompareHashAndPassword(p.dummy, password)
		}
		return false
	}
	return bcrypt.CompareHashAndPassword(hash, password) == nil
}

// allowed reports whether the client may publish to (write) or subscribe to /
// receive from (!write) the topic or filter. Shared-subscription prefixes are
// stripped first.
func (p *authPlan) allowed(username, clientID, topic string, write bool) bool {
	if len(p.acl) == 0 {
		return true
	}
	topic = stripShare(topic)
	allow := false
	for i := range p.acl {
		r := &p.acl[i]
		if r.Username != "*" && (username == "" || r.Username != username) {
			continue
		}
		if r.ClientID != "" && r.ClientID != clientID {
			continue
		}
		// Deny refuses a publish topic, a delivered topic, or a subscription
		// lying entirely inside a deny filter; a wider subscription is
		// granted and the denied topics are filtered out on delivery.
		for _, f := range r.Deny {
			if f, ok := expand(f, username, clientID); ok && subset(topic, f) {
				return false
			}
		}
		list := r.Subscribe
		if write {
			list = r.Publish
		}
		for _, f := range list {
			if f, ok := expand(f, username, clientID); ok && subset(topic, f) {
				allow = true
			}
		}
	}
	return allow
}

// expand substitutes {username} and {clientid}. It refuses (ok=false) when a
// value is missing or would widen the filter (contains a wildcard or level
// separator).
func expand(filter, username, clientID string) (string, bool) {
	if !strings.Contains(filter, "{") {
		return filter, true
	}
	for _, v := range []struct{ key, val string }{{"{username}", username}, {"{clientid}", clientID}} {
		if !strings.Contains(filter, v.key) {
			continue
		}
		if v.val == "" || strings.ContainsAny(v.val, "+#/") {
			return "", false
		}
		filter = strings.ReplaceAll(filter, v.key, v.val)
	}
	return filter, true
}

func stripShare(filter string) string {
	if len(filter) > 7 && strings.EqualFold(filter[:7], "$share/") {
		if i := strings.IndexByte(filter[7:], '/'); i >= 0 {
			return filter[7+i+1:]
		}
	}
	return filter
}

// validFilter reports whether f is a syntactically valid MQTT topic filter.
func validFilter(f string) bool {
	if f == "" || strings.ContainsRune(f, 0) {
		return false
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return false
		}
		if strings.Contains(l, "+") && l != "+" {
			return false
		}
	}
	return true
}

// subset reports whether every topic matched by req (a topic name or a filter)
// is also matched by filter. For a topic name it is plain matching.
func subset(req, filter string) bool {
	r := strings.Split(req, "/")
	f := strings.Split(filter, "/")
	for i, fl := range f {
		if i == 0 && (fl == "#" || fl == "+") && strings.HasPrefix(r[0], "$") {
			return false // [MQTT-4.7.2-1] wildcards do not match $ topics
		}
		if fl == "#" {
			return len(r) >= i
		}
		if i >= len(r) || r[i] == "#" {
			return false
		}
		if fl == "+" {
			continue
		}
		if r[i] != fl {
			return false
		}
	}
	return len(r) == len(f)
}
