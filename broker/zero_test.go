package broker

import (
	"testing"
	"time"
)

// limits.topic_alias_maximum: 0 and limits.max_session_expiry: 0 reach the
// MQTT server as 0 (no aliases; no session outlives its connection); absent,
// they are 64 and 168h (issue 15: 0 used to mean "default").
func TestLimitsExplicitZero(t *testing.T) {
	for _, tc := range []struct {
		name          string
		limits        LimitsConfig
		aliases       uint16
		sessionExpiry uint32
	}{
		{"absent", LimitsConfig{}, 64, uint32((168 * time.Hour).Seconds())},
		{"zero", LimitsConfig{TopicAliasMaximum: new(0), MaxSessionExpiry: new(time.Duration(0))}, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := New(Config{Limits: tc.limits}, Options{DataDir: t.TempDir(), Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			c := b.capabilities()
			if c.TopicAliasMaximum != tc.aliases || c.MaximumSessionExpiryInterval != tc.sessionExpiry {
				t.Errorf("topic alias maximum %d, session expiry %ds; want %d, %ds", c.TopicAliasMaximum, c.MaximumSessionExpiryInterval, tc.aliases, tc.sessionExpiry)
			}
		})
	}
}
