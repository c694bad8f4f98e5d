package bridge

import "testing"

func TestTopicMapping(t *testing.T) {
	c := Config{
		Forward: []ForwardRoute{
			{Filter: "myhome/#", Prefix: "sites/{gateway}/"},
			{Filter: "homeassistant/#"},
			{Filter: "myhome/+/boiler/#", Prefix: "boilers/"}, // shadowed for UpstreamTopic by the first
		},
		Subscribe: []SubscribeRoute{
			{Filter: "sites/{gateway}/myhome/+/+/+/set", StripPrefix: "sites/{gateway}/"},
			{Filter: "sites/{gateway}/cmd/#", StripPrefix: "sites/{gateway}/cmd/", Prefix: "local/"},
			{Filter: "homeassistant/status"},
		},
	}
	check := func(name string, got string, ok bool, want string, wantOK bool) {
		t.Helper()
		if got != want || ok != wantOK {
			t.Errorf("%s = %q, %v; want %q, %v", name, got, ok, want, wantOK)
		}
	}
	got, ok := c.UpstreamTopic("gw", "myhome/ground/boiler/temp")
	check("UpstreamTopic", got, ok, "sites/gw/myhome/ground/boiler/temp", true)
	got, ok = c.UpstreamTopic("gw", "elsewhere/x")
	check("UpstreamTopic(unrouted)", got, ok, "", false)

	got, ok = c.ForwardSource("gw", "homeassistant/sensor/gw/a_b/config")
	check("ForwardSource", got, ok, "homeassistant/sensor/gw/a_b/config", true)
	got, ok = c.ForwardSource("gw", "sites/gw/myhome/a")
	check("ForwardSource(prefixed)", got, ok, "myhome/a", true)
	got, ok = c.ForwardSource("gw", "other/sensor/config")
	check("ForwardSource(none)", got, ok, "", false)

	got, ok = c.LocalTopic("gw", "sites/gw/myhome/g/boiler/sp/set")
	check("LocalTopic", got, ok, "myhome/g/boiler/sp/set", true)
	got, ok = c.LocalTopic("gw", "homeassistant/status")
	check("LocalTopic(status)", got, ok, "homeassistant/status", true)
	got, ok = c.LocalTopic("gw", "sites/other/myhome/g/boiler/sp/set")
	check("LocalTopic(other gateway)", got, ok, "", false)

	got, ok = c.SubscribeSource("gw", "myhome/g/boiler/sp/set")
	check("SubscribeSource", got, ok, "sites/gw/myhome/g/boiler/sp/set", true)
	got, ok = c.SubscribeSource("gw", "local/valve/set")
	check("SubscribeSource(second route)", got, ok, "sites/gw/cmd/valve/set", true)
	got, ok = c.SubscribeSource("gw", "myhome/g/boiler/sp/extra/set") // one level too deep for the filter
	check("SubscribeSource(unreachable)", got, ok, "", false)
}
