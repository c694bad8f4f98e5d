package bridge

import (
	"bytes"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/packets"
	"github.com/google/go-cmp/cmp"
)

// TestAppendPublishHeader checks that link5's PUBLISH encoding is byte for
// byte what paho.golang writes for the same packet.
func TestAppendPublishHeader(t *testing.T) {
	expiry := uint32(300)
	tests := []struct {
		name string
		pb   packets.Publish
	}{
		{"qos0", packets.Publish{QoS: 0, Topic: "a/b", Payload: []byte("x")}},
		{"qos1 empty payload", packets.Publish{QoS: 1, PacketID: 1, Topic: "sites/gw1/t"}},
		{"qos2 retain dup", packets.Publish{QoS: 2, PacketID: 65535, Retain: true, Duplicate: true, Topic: "t", Payload: []byte("on")}},
		{"remaining length 2 bytes", packets.Publish{QoS: 1, PacketID: 300, Topic: "t", Payload: bytes.Repeat([]byte{7}, 200)}},
		{"remaining length 3 bytes", packets.Publish{QoS: 1, PacketID: 2, Topic: strings.Repeat("t", 300), Payload: bytes.Repeat([]byte{7}, 20000)}},
		{"properties", packets.Publish{QoS: 1, PacketID: 9, Topic: "t", Payload: []byte("{}"), Properties: &packets.Properties{
			ContentType: "application/json", ResponseTopic: "r/1", CorrelationData: []byte{1, 2}, MessageExpiry: &expiry,
			User: []packets.User{{Key: "k", Value: "v"}, {Key: "k", Value: "w"}},
		}}},
		{"empty properties", packets.Publish{QoS: 1, PacketID: 9, Topic: "t", Payload: []byte("p"), Properties: &packets.Properties{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want bytes.Buffer
			if _, err := tt.pb.WriteTo(&want); err != nil {
				t.Fatal(err)
			}
			got := append(appendPublishHeader([]byte("junk")[:0], &tt.pb), tt.pb.Payload...)
			if diff := cmp.Diff(want.Bytes(), got); diff != "" {
				t.Errorf("(-paho +ours):\n%s", diff)
			}
		})
	}
}
