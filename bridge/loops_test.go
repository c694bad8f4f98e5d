package bridge

import "testing"

func TestFiltersOverlap(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"sites/g/#", "sites/g/cmd/#", true},
		{"sites/g/myhome/#", "sites/g/cmd/#", false},
		{"sites/g/+/x", "sites/g/cmd/#", true},
		{"sites/g/+", "sites/g/cmd/set", false},
		{"sites/g/status", "sites/g/+", true},
		{"a/b", "a/b", true},
		{"a/b", "a/b/c", false},
		{"a/#", "a", true}, // "#" includes the parent level
		{"#", "anything/at/all", true},
	} {
		if got := filtersOverlap(tc.a, tc.b); got != tc.want {
			t.Errorf("filtersOverlap(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
		if got := filtersOverlap(tc.b, tc.a); got != tc.want {
			t.Errorf("filtersOverlap(%q, %q) = %v, want %v", tc.b, tc.a, got, tc.want)
		}
	}
}

func TestIsStatusTopic(t *testing.T) {
	for _, tc := range []struct {
		prefix, topic string
		want          bool
	}{
		{"", "sites/g/status", true},
		{"sites/g/", "status", true},
		{"sites/g/", "status/bridge", true},
		{"sites/", "g/status", true},
		{"sites/g/", "statusx", false},
		{"sites/g/", "stat", false},
		{"sites/g/", "myhome/status", false},
	} {
		if got := isStatusTopic(tc.prefix, tc.topic, "sites/g/status"); got != tc.want {
			t.Errorf("isStatusTopic(%q, %q) = %v, want %v", tc.prefix, tc.topic, got, tc.want)
		}
	}
}

func TestLoopErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		fwd  ForwardRoute
		sub  SubscribeRoute
		want bool
	}{
		{"command loop past the ACL", ForwardRoute{Filter: "#", Prefix: "sites/{gateway}/"},
			SubscribeRoute{Filter: "sites/{gateway}/cmd/#", StripPrefix: "sites/{gateway}/cmd/"}, true},
		{"disjoint", ForwardRoute{Filter: "myhome/#", Prefix: "sites/{gateway}/"},
			SubscribeRoute{Filter: "sites/{gateway}/cmd/#", StripPrefix: "sites/{gateway}/cmd/"}, false},
		{"identity round trip (Home Assistant upstream)", ForwardRoute{Filter: "myhome/#", Prefix: "sites/{gateway}/"},
			SubscribeRoute{Filter: "sites/{gateway}/myhome/+/+/+/set", StripPrefix: "sites/{gateway}/"}, false},
		{"identity with a subscribe prefix", ForwardRoute{Filter: "local/#", Prefix: "up/"},
			SubscribeRoute{Filter: "up/local/#", StripPrefix: "up/local/", Prefix: "local/"}, false},
	} {
		c := Config{Forward: []ForwardRoute{tc.fwd}, Subscribe: []SubscribeRoute{tc.sub}}
		if got := len(c.loopErrors()) > 0; got != tc.want {
			t.Errorf("%s: refused %v, want %v (%v)", tc.name, got, tc.want, c.loopErrors())
		}
	}
}
