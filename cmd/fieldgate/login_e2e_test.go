package main

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// Failed logins are throttled per address and per username: after 10
// failures, further attempts are refused without the bcrypt comparison;
// every refusal comes after a delay; 3.1.1 gets return code 0x04.
func TestAttackLoginThrottled(t *testing.T) {
	g := startGW(t, t.TempDir(), authConfig(t))
	var wg sync.WaitGroup
	codes := make([]byte, 25)
	start := time.Now()
	for i := range codes {
		wg.Go(func() {
			rc := dialMQTT(t, g.mqttPort)
			_, codes[i] = rc.connack(connectOpts{clientID: fmt.Sprint("guess-", i), clean: true, user: "alice", pass: "guess"})
		})
	}
	wg.Wait()
	if took := time.Since(start); took < 900*time.Millisecond {
		t.Errorf("25 wrong passwords answered within %s: refusals are not delayed", took)
	}
	for i, c := range codes {
		if c != 0x04 {
			t.Errorf("attempt %d: CONNACK %#x, want 0x04 (bad user name or password, MQTT 3.1.1)", i, c)
		}
	}
	if !strings.Contains(g.log.String(), "(too many failed logins, throttled)") {
		t.Errorf("no throttling after 25 failures:\n%s", g.log.String())
	}
	// The right password is throttled too while the budget is spent, and
	// accepted again once it refills.
	eventually(t, 10*time.Second, "alice logs in again", func() bool {
		rc := dialMQTT(t, g.mqttPort)
		_, code := rc.connack(connectOpts{clientID: "alice-ok", clean: true, user: "alice", pass: "alice-pw"})
		return code == 0
	})
}
