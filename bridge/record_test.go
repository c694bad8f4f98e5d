package bridge

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fieldgate/fieldgate/buffer"
)

func TestRecordRoundTrip(t *testing.T) {
	for _, r := range []record{
		{Route: 0, Accepted: time.Unix(0, 1), Msg: Message{Topic: "a"}},
		{Route: 7, Accepted: time.Unix(1_700_000_000, 123456789), Msg: Message{
			Topic: "sites/gw1/myhome/x", Payload: []byte("21.5"), QoS: 2, Retain: true,
			ContentType: "text/plain", ResponseTopic: "r/t", CorrelationData: []byte{0, 1, 2},
			UserProperties: []UserProperty{{"unit", "°C"}, {"k", ""}}, MessageExpiry: 3600,
		}},
	} {
		got, err := decodeRecord(encodeRecord(&r))
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if d := cmp.Diff(r, got); d != "" {
			t.Errorf("round trip (-want +got):\n%s", d)
		}
	}
}

func TestRecordGarbage(t *testing.T) {
	good := encodeRecord(&record{Accepted: time.Unix(5, 0), Msg: Message{Topic: "t", Payload: []byte("p"), QoS: 1}})
	bad := [][]byte{
		nil, {}, {1}, {2, 0, 1}, // unknown version
		{1, 0, 3},    // qos 3
		{1, 0x80, 1}, // unknown flag
		good[:len(good)-1],
		append(append([]byte{}, good...), 0), // trailing byte
		{1, 0, 1, 0, 0, 0, 0},                // empty topic
	}
	for i, b := range bad {
		if _, err := decodeRecord(b); err == nil {
			t.Errorf("case %d: garbage %x decoded without error", i, b)
		}
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(encodeRecord(&record{Accepted: time.Unix(5, 0), Msg: Message{Topic: "t", Payload: []byte("p"), QoS: 1, UserProperties: []UserProperty{{"a", "b"}}}}))
	f.Add([]byte{1, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeRecord(data)
		if err != nil {
			return
		}
		again, err := decodeRecord(encodeRecord(&r))
		if err != nil {
			t.Fatalf("re-encoded record fails to decode: %v", err)
		}
		if d := cmp.Diff(r, again); d != "" {
			t.Fatalf("unstable round trip:\n%s", d)
		}
	})
}

// A buffer record that does not decode, and one whose message expiry
// elapsed, are counted, acked and skipped; the records around them are
// delivered.
func TestCorruptRecordSkipped(t *testing.T) {
	t.Parallel()
	up := plainMosquitto(t)
	q := openQueue(t, buffer.Config{})
	b := newBridge(t, testConfig("mqtt://"+up), q, nil, nil)
	o := newObserver(t, up, "sites/#", 1)
	ctx := context.Background()
	if err := b.Ingest(ctx, Message{Topic: "myhome/a", QoS: 1, Payload: []byte("p0:0")}); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Append(ctx, []byte("\x07garbage")); err != nil {
		t.Fatal(err)
	}
	// A message whose MQTT 5 expiry elapsed while buffered is dropped.
	stale := encodeRecord(&record{Accepted: time.Now().Add(-time.Hour), Msg: Message{Topic: "sites/gw1/myhome/a", QoS: 1, Payload: []byte("p0:99"), MessageExpiry: 60}})
	if _, err := q.Append(ctx, stale); err != nil {
		t.Fatal(err)
	}
	if err := b.Ingest(ctx, Message{Topic: "myhome/a", QoS: 1, Payload: []byte("p0:1"), MessageExpiry: 3600}); err != nil {
		t.Fatal(err)
	}
	startBridge(t, b)
	checkDelivery(t, o, 2)
	waitFor(t, 10*time.Second, "empty backlog", func() bool { return b.Stats().BacklogMessages == 0 })
	if s := b.Stats(); s.Dropped.Corrupt != 1 || s.Dropped.Expired != 1 || s.Forwarded != 2 {
		t.Errorf("corrupt=%d expired=%d forwarded=%d, want 1, 1 and 2", s.Dropped.Corrupt, s.Dropped.Expired, s.Forwarded)
	}
}
