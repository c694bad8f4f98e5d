package bridge

import (
	"errors"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fieldgate/fieldgate/buffer"
)

func TestConfigDefaults(t *testing.T) {
	c := Config{Upstream: UpstreamConfig{URL: "mqtts://broker.example.com"}, Forward: []ForwardRoute{{Filter: "myhome/#"}}}
	c.Defaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaulted config invalid: %v", err)
	}
	want := UpstreamConfig{
		URL: "mqtts://broker.example.com", Protocol: "5", ClientID: "{gateway}", KeepAlive: new(30 * time.Second),
		SessionExpiry: new(time.Hour), StatusTopic: "sites/{gateway}/status", ConnectTimeout: 10 * time.Second,
		Backoff: Backoff{Min: time.Second, Max: 2 * time.Minute},
	}
	if d := cmp.Diff(want, c.Upstream); d != "" {
		t.Errorf("upstream defaults (-want +got):\n%s", d)
	}
	if c.Inflight != 1024 || c.StallTimeout != 30*time.Second || *c.StatusInterval != time.Minute || *c.Forward[0].QoS != 1 {
		t.Errorf("inflight=%d stall=%v status=%v qos=%d", c.Inflight, c.StallTimeout, *c.StatusInterval, *c.Forward[0].QoS)
	}
	if c.Buffer.WhenFull != buffer.DropOldest {
		t.Errorf("buffer defaults not applied: %+v", c.Buffer)
	}
	before := c
	c.Defaults()
	if d := cmp.Diff(before, c); d != "" {
		t.Errorf("Defaults not idempotent:\n%s", d)
	}
}

func TestConfigValidate(t *testing.T) {
	c := Config{
		Upstream: UpstreamConfig{
			URL: "http://x", Protocol: "4", ClientID: "{site}",
			TLS:     TLSConfig{CertFile: "c.pem"},
			Backoff: Backoff{Min: time.Second, Max: time.Millisecond},
		},
		Forward: []ForwardRoute{
			{Filter: "ok/#", Prefix: "sites/{gateway}/"},
			{Filter: "bad/#/x", Prefix: "a/+", QoS: new(byte(3))},
		},
		Subscribe:  []SubscribeRoute{{Filter: "", StripPrefix: "x/#"}},
		Buffer:     buffer.Config{MaxBytes: 1, WhenFull: "explode"},
		Inflight:   -1,
		ReplayRate: ReplayRate{BytesPerSecond: -1},
	}
	c.Defaults()
	err := c.Validate()
	var paths []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("%v is not a *FieldError", e)
		}
		paths = append(paths, fe.FieldPath())
	}
	slices.Sort(paths)
	paths = slices.Compact(paths)
	want := []string{
		"buffer.max_bytes", "buffer.when_full",
		"forward[1].filter", "forward[1].prefix", "forward[1].qos",
		"inflight", "replay_rate.bytes_per_second",
		"subscribe[0].filter", "subscribe[0].strip_prefix",
		"upstream.backoff.max", "upstream.client_id", "upstream.protocol", "upstream.tls", "upstream.url",
	}
	if d := cmp.Diff(want, paths); d != "" {
		t.Errorf("error paths (-want +got):\n%s\nerror: %v", d, err)
	}
}

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		filter, topic string
		want          bool
	}{
		{"myhome/#", "myhome/groundfloor/boiler/temperature", true},
		{"myhome/#", "myhome", true},
		{"myhome/+/+/temperature", "myhome/groundfloor/boiler/temperature", true},
		{"myhome/+/temperature", "myhome/groundfloor/boiler/temperature", false},
		{"#", "a/b", true},
		{"#", "$SYS/x", false},
		{"+/x", "$SYS/x", false},
		{"a/b", "a/b", true},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
		{"a/+", "a/", true},
		{"sites/gw1/cmd/#", "sites/gw1/cmd/boiler/set", true},
	} {
		if got := match(tc.filter, tc.topic); got != tc.want {
			t.Errorf("match(%q, %q) = %v, want %v", tc.filter, tc.topic, got, tc.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	b := Backoff{Min: time.Second, Max: 10 * time.Second}
	for n, hi := range []time.Duration{1, 2, 4, 8, 10, 10, 10} {
		hi *= time.Second
		for range 50 {
			d := backoff(b, n)
			if d < hi/2 || d > hi {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", n, d, hi/2, hi)
			}
		}
	}
	if d := backoff(b, 1000); d > b.Max {
		t.Fatalf("backoff(1000) = %v exceeds max", d)
	}
}

// The pacer holds the drain to the configured rates (fake time).
func TestPacer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := pacer{msgRate: 10}
		start := time.Now()
		for range 31 { // 10 of burst, then 21 at 10/s
			if err := p.wait(t.Context(), 1); err != nil {
				t.Fatal(err)
			}
		}
		if got := time.Since(start); got < 2*time.Second || got > 3*time.Second {
			t.Errorf("31 messages at 10/s took %v, want 2s..3s", got)
		}
		p = pacer{byteRate: 1000}
		start = time.Now()
		for range 5 {
			if err := p.wait(t.Context(), 1000); err != nil {
				t.Fatal(err)
			}
		}
		if got := time.Since(start); got < 3*time.Second || got > 5*time.Second {
			t.Errorf("5000 bytes at 1000/s took %v, want 3s..5s", got)
		}
	})
}

func TestRefusalClass(t *testing.T) {
	for code, want := range map[byte]error{0x97: errRetry, 0x91: errRetry, 0x87: errRejected, 0x90: errRejected, 0x80: errRejected} {
		if err := refusal("PUBACK", code, ""); !errors.Is(err, want) {
			t.Errorf("refusal(%#x) = %v, want %v", code, err, want)
		}
	}
}
