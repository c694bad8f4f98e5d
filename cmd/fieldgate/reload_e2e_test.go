package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SIGHUP under load: the device map and the ACL change, local clients stay
// connected, nothing acknowledged is lost; an invalid file is rejected and
// the running configuration kept.
func TestReloadUnderLoad(t *testing.T) {
	need(t, python, "mosquitto_sub", "mosquitto_pub")
	up := startMosquitto(t, 0)
	upSub := startSub(t, "-h", "127.0.0.1", "-p", fmt.Sprint(up.port), "-q", "1", "-t", "sites/#")
	time.Sleep(300 * time.Millisecond)

	devicesA := `devices:
  - name: alpha
    driver: sim
    poll: 200ms
    topic: "plant/{device}/{point}"
    points: [{name: level, sim: counter, value: 0, step: 1}]
`
	devicesB := devicesA + `  - name: beta
    driver: sim
    poll: 200ms
    topic: "plant/{device}/{point}"
    points: [{name: level, sim: constant, value: 42}]
`
	aclBefore := "  auth: {anonymous: true}\n"
	aclAfter := "  auth:\n    anonymous: true\n    acl:\n      - {username: \"*\", publish: [\"myhome/#\"], subscribe: [\"myhome/#\", \"plant/#\"], deny: [\"plant/secret/#\"]}\n"
	base := bridgeConfig(up.port, "")
	dir := t.TempDir()
	g := startGW(t, dir, base+devicesA)

	local := startSub(t, "-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-q", "1", "-t", "plant/#")
	eventually(t, 10*time.Second, "alpha readings", func() bool {
		for _, l := range local.snapshot() {
			if strings.HasPrefix(l, "plant/alpha/level ") {
				return true
			}
		}
		return false
	})

	ackedPath := filepath.Join(dir, "acked")
	pub := exec.Command(python, "-c", publisherScript, fmt.Sprint(g.mqttPort), "0", "6000", ackedPath)
	pubOut := &syncBuffer{}
	pub.Stdout, pub.Stderr = pubOut, pubOut
	if err := pub.Start(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "publisher under way", func() bool { return len(readSeqs(t, ackedPath)) >= 1000 })

	// An invalid file is rejected; the gateway keeps running as it was.
	writeRaw := func(body string) {
		t.Helper()
		r := strings.NewReplacer("{{mqtt}}", fmt.Sprint(g.mqttPort), "{{http}}", fmt.Sprint(g.httpPort), "{{data}}", filepath.Join(dir, "data"))
		if err := os.WriteFile(g.config, []byte(r.Replace(body)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeRaw(base + devicesA + "  - {name: broken, driver: warp}\n")
	if err := g.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "reload rejected in the log", func() bool {
		return strings.Contains(g.log.String(), "reload rejected")
	})

	// A valid file: beta appears, the ACL applies, connections survive.
	routes := `    - {filter: "plant/beta/#", prefix: "sites/{gateway}/"}
  subscribe:
    - {filter: "sites/{gateway}/cmd/#", strip_prefix: "sites/{gateway}/cmd/", qos: 1}
`
	after := strings.Replace(base, aclBefore, aclAfter, 1) + routes
	writeRaw(after + devicesB)
	if err := g.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "beta readings after reload", func() bool {
		return hasPrefix(local, "plant/beta/level ")
	})
	if err := pub.Wait(); err != nil {
		t.Fatalf("publisher: %v\n%s", err, pubOut.String())
	}
	if !strings.Contains(g.log.String(), "configuration reloaded") {
		t.Errorf("no reload log line:\n%s", g.log.String())
	}
	// The ACL now denies plant/secret: a publish there is not delivered.
	_, _ = mosqPub("-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-q", "1", "-t", "plant/secret/x", "-m", "no")
	// The local subscriber was never disconnected: it still receives.
	n := len(local.snapshot())
	eventually(t, 5*time.Second, "local subscriber still receiving", func() bool { return len(local.snapshot()) > n })
	if local.has("plant/secret/x no") {
		t.Error("ACL reload not applied: plant/secret/x delivered")
	}

	// The new forward route carries beta upstream; the new subscribe route
	// brings commands down, on the same upstream connection.
	eventually(t, 10*time.Second, "beta forwarded by the new route", func() bool { return hasPrefix(upSub, "sites/e2e/plant/beta/level ") })
	if hasPrefix(upSub, "sites/e2e/plant/alpha/") {
		t.Error("alpha forwarded although no route matches it")
	}
	eventually(t, 10*time.Second, "command through the new subscribe route", func() bool {
		_, _ = mosqPub("-h", "127.0.0.1", "-p", fmt.Sprint(up.port), "-q", "1", "-t", "sites/e2e/cmd/plant/alpha/note", "-m", "hi")
		time.Sleep(100 * time.Millisecond)
		return local.has("plant/alpha/note hi")
	})
	if m := g.metrics(t); metricValue(m, "fieldgate_upstream_reconnects_total") != 0 {
		t.Errorf("the upstream connection was re-established by the reload")
	}

	acked := readSeqs(t, ackedPath)
	if len(acked) != 6000 {
		t.Fatalf("publisher saw %d PUBACKs, want 6000:\n%s", len(acked), pubOut.String())
	}
	eventually(t, 60*time.Second, "every acknowledged message upstream", func() bool {
		seen := map[int]bool{}
		for _, s := range upstreamSeqs(upSub) {
			seen[s] = true
		}
		return len(seen) >= len(acked)
	})
	checkDelivery(t, acked, upstreamSeqs(upSub))
	g.stop()
}

func hasPrefix(s *sub, prefix string) bool {
	for _, l := range s.snapshot() {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}
