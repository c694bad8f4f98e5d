package sparkplug

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// problems flattens Validate's errors.Join into path → message.
func problems(t *testing.T, err error) map[string]string {
	t.Helper()
	got := map[string]string{}
	if err == nil {
		return got
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("Validate returned %T, want an errors.Join", err)
	}
	for _, e := range j.Unwrap() {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("problem %v is %T, want *FieldError", e, e)
		}
		if got[fe.FieldPath()] != "" {
			got[fe.FieldPath()] += "; "
		}
		got[fe.FieldPath()] += fe.Msg
	}
	return got
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want map[string]string
	}{
		{"minimal", Config{GroupID: "plant1"}, map[string]string{}},
		{"all keys", Config{GroupID: "plant1", EdgeNodeID: "edge-{gateway}", PrimaryHostID: "scada"}, map[string]string{}},
		{"group required", Config{}, map[string]string{"sparkplug.group_id": "must not be empty"}},
		{"separators", Config{GroupID: "a/b", EdgeNodeID: "gw+1", PrimaryHostID: "host#"}, map[string]string{
			"sparkplug.group_id":        `"a/b" must not contain '/', '+' or '#'`,
			"sparkplug.edge_node_id":    `"gw+1" must not contain '/', '+' or '#'`,
			"sparkplug.primary_host_id": `"host#" must not contain '/', '+' or '#'`,
		}},
		{"STATE group", Config{GroupID: "STATE"}, map[string]string{
			"sparkplug.group_id": `"STATE" is reserved for host application state topics`,
		}},
		{"unknown placeholder", Config{GroupID: "g", EdgeNodeID: "{site}"}, map[string]string{
			"sparkplug.edge_node_id": `"{site}": the only placeholder is {gateway}`,
		}},
		{"bad UTF-8", Config{GroupID: "\xff"}, map[string]string{"sparkplug.group_id": "is not valid UTF-8"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.cfg
			c.Defaults()
			if diff := cmp.Diff(tt.want, problems(t, c.Validate())); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}

func TestConfigDefaultsAndExpand(t *testing.T) {
	c := Config{GroupID: "plant1"}
	c.Defaults()
	c.Defaults()
	if c.EdgeNodeID != "{gateway}" {
		t.Fatalf("EdgeNodeID default = %q, want {gateway}", c.EdgeNodeID)
	}
	got, err := c.Expand("gw-01")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Config{GroupID: "plant1", EdgeNodeID: "gw-01"}, got); diff != "" {
		t.Errorf("Expand (-want +got):\n%s", diff)
	}
	_, err = c.Expand("site/gw")
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Path != "sparkplug.edge_node_id" {
		t.Errorf("Expand with a '/' in the gateway id: %v, want a sparkplug.edge_node_id problem", err)
	}
}
