package bridge

import (
	"fmt"
	"testing"

	mqttpackets "github.com/eclipse/paho.mqtt.golang/packets"
)

func TestRefusedErrorWording(t *testing.T) {
	for _, c := range []struct {
		err  *RefusedError
		want string
	}{
		{&RefusedError{Packet: "CONNACK", Code: 0x87, ClientID: "gw"}, "upstream refused the login (0x87 not authorized): check bridge.upstream.username / password_file (and the upstream's ACL for this user)"},
		{&RefusedError{Packet: "CONNACK", Code: 0x86, ClientID: "gw"}, "upstream refused the login (0x86 bad user name or password): check bridge.upstream.username / password_file (and the upstream's ACL for this user)"},
		{&RefusedError{Packet: "CONNACK", Code: 0x84, ClientID: "gw"}, "upstream refused the login (0x84 unsupported protocol version): set bridge.upstream.protocol: 3.1.1"},
		{&RefusedError{Packet: "DISCONNECT", Code: 0x8E, ClientID: "gw-01"}, `upstream closed the connection (0x8e session taken over): another client connected with the same client id "gw-01": is gateway.id unique among your gateways?`},
		{&RefusedError{Packet: "DISCONNECT", Code: 0x98, Reason: "kicked by admin"}, `upstream closed the connection (0x98 administrative action) "kicked by admin"`},
	} {
		if got := c.err.Error(); got != c.want {
			t.Errorf("%#x:\n got %s\nwant %s", c.err.Code, got, c.want)
		}
	}
}

func TestRefusal3(t *testing.T) {
	err := fmt.Errorf("%w : %w", mqttpackets.ErrorRefusedNotAuthorised, fmt.Errorf("EOF"))
	r := refusal3(err, "gw")
	if r == nil || r.Code != 0x87 {
		t.Fatalf("refusal3 = %+v, want code 0x87", r)
	}
	if refusal3(fmt.Errorf("dial: refused"), "gw") != nil {
		t.Fatal("a dial error is not a refusal")
	}
}
