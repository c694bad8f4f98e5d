package bridge

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/buffer"
	"github.com/google/go-cmp/cmp"
)

// IngestAsync queues records in the order of the calls, one per matching
// route, reports durability through the Ingestion, counts ingested and
// rejected records like Ingest, and queues nothing for messages that match
// no buffered route or come from the bridge itself.
func TestIngestAsync(t *testing.T) {
	t.Parallel()
	q := openQueue(t, buffer.Config{})
	cfg := testConfig("mqtt://127.0.0.1:1")
	cfg.Forward = append(cfg.Forward, ForwardRoute{Filter: "myhome/alarm/#", Prefix: "alarms/"})
	cfg.Defaults()
	b := newBridge(t, cfg, q, nil, nil)

	const n = 300
	var ins []*Ingestion
	var want []string
	for i := range n {
		topic := fmt.Sprintf("myhome/t/%d", i)
		if i%10 == 0 {
			topic = fmt.Sprintf("myhome/alarm/%d", i)
		}
		in, err := b.IngestAsync(Message{Topic: topic, QoS: 1, Payload: []byte("x")})
		if err != nil || in == nil {
			t.Fatalf("IngestAsync %d: %v, %v", i, in, err)
		}
		ins = append(ins, in)
		want = append(want, "sites/gw1/"+topic)
		if i%10 == 0 {
			want = append(want, "alarms/"+topic)
		}
	}
	for i, in := range ins {
		<-in.Done()
		if err := in.Err(); err != nil {
			t.Fatalf("Err %d: %v", i, err)
		}
	}
	recs, err := q.Read(0, 2*n, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		rec, err := decodeRecord(r.Data)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, rec.Msg.Topic)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("stored upstream topics (-want +got):\n%s", diff)
	}
	if s := b.Stats(); s.Ingested != uint64(len(want)) {
		t.Errorf("ingested = %d, want %d", s.Ingested, len(want))
	}
	for _, m := range []Message{
		{Topic: "other/x", QoS: 1},
		{Topic: "myhome/x", QoS: 1, Origin: Origin},
		{Topic: "myhome/x", QoS: 0}, // live QoS 0, not buffered
	} {
		if in, err := b.IngestAsync(m); in != nil || err != nil {
			t.Errorf("IngestAsync(%+v) = %v, %v; want nothing queued", m, in, err)
		}
	}

	full := openQueue(t, buffer.Config{MaxBytes: 64 << 10, WhenFull: buffer.Reject})
	fb := newBridge(t, testConfig("mqtt://127.0.0.1:1"), full, nil, nil)
	payload := make([]byte, 4096)
	var last error
	for i := 0; i < 100 && last == nil; i++ {
		in, err := fb.IngestAsync(Message{Topic: "myhome/x", QoS: 1, Payload: payload})
		if err != nil {
			t.Fatal(err)
		}
		last = in.Err()
	}
	if !errors.Is(last, buffer.ErrFull) {
		t.Fatalf("full buffer: %v, want buffer.ErrFull", last)
	}
	if s := fb.Stats(); s.Rejected != 1 {
		t.Errorf("rejected = %d, want 1", s.Rejected)
	}
}

// encodeForward stores what encodeRecord stores for the message as mapped
// to its route (topic prefixed, QoS capped), every field included.
func TestEncodeForward(t *testing.T) {
	t.Parallel()
	m := Message{
		Topic: "myhome/a", Payload: []byte("21.5"), QoS: 2, Retain: true, Origin: "dev",
		ContentType: "text/plain", ResponseTopic: "myhome/r", CorrelationData: []byte{1, 2},
		UserProperties: []UserProperty{{"k", "v"}, {"unit", "°C"}}, MessageExpiry: 60,
	}
	accepted := time.Unix(1700000000, 123456789)
	for _, prefix := range []string{"", "sites/gw1/"} {
		up := m
		up.Origin = ""
		up.Topic = prefix + m.Topic
		up.QoS = 1
		want := encodeRecord(&record{Route: 3, Accepted: accepted, Msg: up})
		if got := encodeForward(3, accepted, prefix, 1, &m); !bytes.Equal(got, want) {
			t.Errorf("prefix %q: encodeForward = %x, want %x", prefix, got, want)
		}
		r, err := decodeRecord(want)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(record{Route: 3, Accepted: accepted, Msg: up}, r); diff != "" {
			t.Errorf("prefix %q: decoded (-want +got):\n%s", prefix, diff)
		}
	}
}

// A forward route with qos: 0 sends every message at QoS 0 and never writes
// to the buffer, whatever the message's own QoS (unless buffer_qos0); an
// absent qos is 1 (issue 15: an explicit 0 used to become 1).
func TestIngestQoS0Route(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		qos      *byte
		bufferQ0 bool
		buffered bool
	}{
		{"qos 0", new(byte(0)), false, false},
		{"qos 0, buffer_qos0", new(byte(0)), true, true},
		{"qos absent", nil, false, true},
		{"qos 1", new(byte(1)), false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := openQueue(t, buffer.Config{})
			cfg := testConfig("mqtt://127.0.0.1:1")
			cfg.Forward = []ForwardRoute{{Filter: "myhome/#", Prefix: "sites/{gateway}/", QoS: tc.qos, BufferQoS0: tc.bufferQ0}}
			cfg.Defaults()
			b := newBridge(t, cfg, q, nil, nil)
			for _, mq := range []byte{0, 1, 2} {
				if mq == 0 && !tc.bufferQ0 {
					continue
				}
				in, err := b.IngestAsync(Message{Topic: "myhome/x", QoS: mq, Payload: []byte("1")})
				if err != nil {
					t.Fatal(err)
				}
				if (in != nil) != tc.buffered {
					t.Fatalf("message QoS %d: buffered = %v, want %v", mq, in != nil, tc.buffered)
				}
				if in != nil {
					if err := in.Err(); err != nil {
						t.Fatal(err)
					}
				}
			}
			if s := q.Stats(); (s.Appended > 0) != tc.buffered {
				t.Errorf("records appended to the buffer: %d, buffered = %v", s.Appended, tc.buffered)
			}
		})
	}
}
