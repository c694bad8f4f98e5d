package bridge

import (
	"fmt"
	"strings"
)

// Route loops. A forward route carries local messages to the upstream topic
// space prefix+filter. When that space meets a subscribe route's filter, a
// local client can publish a message that the bridge forwards up and then
// receives back as a command, published locally by the gateway — past the
// local ACL (a 3.1.1 upstream has no No Local; MQTT 5 subscriptions use it,
// but a second gateway or a cluster node would still echo the message).
// The same holds for the status topic, which a local client could then
// spoof. loopErrors rejects such pairs.
func (c *Config) loopErrors() []error {
	var errs []error
	status := c.Upstream.StatusTopic
	for i, f := range c.Forward {
		space := f.Prefix + f.Filter
		for j, s := range c.Subscribe {
			if filtersOverlap(space, s.Filter) {
				errs = append(errs, &FieldError{Path: fmt.Sprintf("forward[%d].filter", i), Msg: fmt.Sprintf(
					"forwards to %q upstream, which overlaps subscribe[%d].filter %q: a local client could publish there and have the message come back as a command, past the local ACL; narrow the filter or change the prefix",
					space, j, s.Filter)})
			}
		}
		for _, st := range []string{status, status + "/bridge"} {
			if st != "" && filtersOverlap(space, st) {
				errs = append(errs, &FieldError{Path: fmt.Sprintf("forward[%d].filter", i), Msg: fmt.Sprintf(
					"forwards to %q upstream, which includes the status topic %q: a local client could spoof the gateway's status; narrow the filter or change the prefix",
					space, st)})
				break
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
