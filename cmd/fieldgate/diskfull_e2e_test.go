package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A full disk (G7): the data directory sits on a small tmpfs that a file
// fills up. New publishes are refused — MQTT 5 with PUBACK 0x97, MQTT 3.1.1
// by closing the connection without an ack — the process keeps running, and
// once space is freed publishing works again and nothing acknowledged
// before is lost.
func TestDiskFull(t *testing.T) {
	need(t, "mosquitto_pub", "mosquitto_sub", "mount", "umount")
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=160m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs for the data directory (the tests run as root): %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })

	upPort := freePort(t)
	g := startGW(t, mnt, bridgeConfig(upPort, ""))
	pub := func(version, payload string) (string, error) {
		return mosqPub("-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-V", version, "-q", "1", "-t", "myhome/seq", "-m", payload)
	}
	if out, err := pub("mqttv5", "1"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}

	filler := filepath.Join(mnt, "filler")
	if out, err := exec.Command("dd", "if=/dev/zero", "of="+filler, "bs=1M", "count=120").CombinedOutput(); err != nil {
		t.Fatalf("fill the disk: %v: %s", err, out)
	}
	if out, _ := pub("mqttv5", "refused"); !strings.Contains(out, "Quota exceeded") {
		t.Errorf("MQTT 5 publish on a full disk: want a negative PUBACK (quota exceeded), got %q", out)
	}
	if out, err := pub("mqttv311", "refused"); err == nil {
		t.Errorf("MQTT 3.1.1 publish on a full disk was acknowledged: %q", out)
	}
	if !strings.Contains(g.log.String(), "disk full") {
		t.Errorf("no clear log line about the full disk:\n%s", g.log.String())
	}
	select {
	case <-g.done:
		t.Fatalf("fieldgate exited on a full disk:\n%s", g.log.String())
	default:
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if out, err := pub("mqttv5", "2"); err != nil || strings.Contains(out, "failed") {
		t.Fatalf("publish after freeing space: %v: %s", err, out)
	}
	// Everything acknowledged reaches the upstream once it appears; nothing refused does.
	up := startMosquitto(t, 0)
	upSub := startSub(t, "-h", "127.0.0.1", "-p", fmt.Sprint(up.port), "-q", "1", "-t", "sites/#")
	waitSubscribed(t, upSub, func(topic, payload string) {
		_, _ = mosqPub("-h", "127.0.0.1", "-p", fmt.Sprint(up.port), "-t", topic, "-m", payload)
	}, "sites/probe")
	proxyTo(t, upPort, up.port) // the upstream appears only now
	eventually(t, 30*time.Second, "acknowledged messages upstream", func() bool {
		return upSub.has("sites/e2e/myhome/seq 1") && upSub.has("sites/e2e/myhome/seq 2")
	})
	if upSub.has("sites/e2e/myhome/seq refused") {
		t.Error("a refused message was forwarded")
	}
	g.stop()
}
