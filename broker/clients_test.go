package broker

import (
	"context"
	"testing"

	"github.com/eclipse/paho.golang/paho"
	"github.com/google/go-cmp/cmp"
)

// Clients lists network clients with their user, protocol and
// subscriptions, and leaves out in-process publishers.
func TestClients(t *testing.T) {
	cfg := anonCfg()
	cfg.Auth.Users = []UserConfig{{Username: "sensor1", PasswordHash: hashFor(t, "pw")}}
	r := start(t, cfg, t.TempDir(), nil)
	if err := r.Publish(context.Background(), Message{Topic: "x/y", Payload: []byte("1"), Origin: "devices"}); err != nil {
		t.Fatal(err)
	}
	c, _, err := dialPaho(t, r.addr(0), &paho.Connect{ClientID: "c1", Username: "sensor1", UsernameFlag: true, Password: []byte("pw"), PasswordFlag: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "b/#", QoS: 1}, {Topic: "a/+", QoS: 0}}}); err != nil {
		t.Fatal(err)
	}
	got := r.Clients()
	if len(got) != 1 {
		t.Fatalf("clients %+v", got)
	}
	got[0].Remote = ""
	want := ClientInfo{ID: "c1", Username: "sensor1", Listener: got[0].Listener, Protocol: 5, Subscriptions: []string{"a/+", "b/#"}}
	if diff := cmp.Diff(want, got[0]); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
