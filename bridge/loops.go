package bridge

import (
	"fmt"
	"strings"
)

// Route loops. A forward route carries local messages to the upstream topic
// space prefix+filter. When that space meets a subscribe route's filter and
// the round trip changes the topic, a local client can publish a message
// that the bridge forwards up and then receives back as a command on
// another local topic, published locally by the gateway — past the local
// ACL (a 3.1.1 upstream has no No Local; MQTT 5 subscriptions use it,
// but a second gateway or a cluster node would still echo the message).
// loopErrors rejects such pairs. (The status topic is protected in
// IngestAsync instead: forwarding everything is a common, valid route.)
func (c *Config) loopErrors() []error {
	var errs []error
	for i, f := range c.Forward {
		space := f.Prefix + f.Filter
		for j, s := range c.Subscribe {
			// A round trip that gives the local topic back unchanged
			// (strip_prefix = the forward prefix + the subscribe prefix)
			// passed the local ACL already on the way up: only an echo.
			if filtersOverlap(space, s.Filter) && s.StripPrefix != f.Prefix+s.Prefix {
				errs = append(errs, &FieldError{Path: fmt.Sprintf("forward[%d].filter", i), Msg: fmt.Sprintf(
					"forwards to %q upstream, which overlaps subscribe[%d].filter %q: a local client could publish there and have the message come back as a command, past the local ACL; narrow the filter or change the prefix",
					space, j, s.Filter)})
			}
		}
	}
	return errs
}

// filtersOverlap reports whether some topic name matches both filters.
func filtersOverlap(a, b string) bool {
	x, y := strings.Split(a, "/"), strings.Split(b, "/")
	for i := 0; ; i++ {
		switch {
		case i == len(x) && i == len(y):
			return true
		case i < len(x) && x[i] == "#", i < len(y) && y[i] == "#":
			return true
		case i == len(x) || i == len(y):
			return false
		case x[i] == "+" || y[i] == "+" || x[i] == y[i]:
			continue
		default:
			return false
		}
	}
}

// isStatusTopic reports whether prefix+topic is the status topic or below
// it, without building the string.
func isStatusTopic(prefix, topic, status string) bool {
	n := len(prefix) + len(topic)
	if n < len(status) {
		return false
	}
	at := func(i int) byte {
		if i < len(prefix) {
			return prefix[i]
		}
		return topic[i-len(prefix)]
	}
	for i := 0; i < len(status); i++ {
		if at(i) != status[i] {
			return false
		}
	}
	return n == len(status) || at(len(status)) == '/'
}
