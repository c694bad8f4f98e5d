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
