package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func runBin(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	var o, e bytes.Buffer
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatal(err)
		}
	}
	return o.String(), e.String(), cmd.ProcessState.ExitCode()
}

func TestVersion(t *testing.T) {
	out, _, code := runBin(t, "", "version")
	if code != 0 || !strings.HasPrefix(out, "fieldgate ") {
		t.Fatalf("version: exit %d, %q", code, out)
	}
}

func TestUsage(t *testing.T) {
	if _, errOut, code := runBin(t, "", "frobnicate"); code != exitUsage || !strings.Contains(errOut, "unknown command") {
		t.Fatalf("unknown command: exit %d, %q", code, errOut)
	}
	if _, _, code := runBin(t, ""); code != exitUsage {
		t.Fatalf("no command: exit %d", code)
	}
	if _, _, code := runBin(t, "", "check", "--nope"); code != exitUsage {
		t.Fatalf("bad flag: exit %d", code)
	}
}

func TestPasswd(t *testing.T) {
	out, errOut, code := runBin(t, "s3cret\n", "passwd")
	if code != 0 {
		t.Fatalf("passwd: exit %d: %s", code, errOut)
	}
	hash := strings.TrimSpace(out)
	if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte("s3cret")); err != nil {
		t.Fatalf("hash %q does not match the password: %v", hash, err)
	}
	if _, _, code := runBin(t, "", "passwd"); code != exitUsage {
		t.Fatalf("empty password: exit %d, want %d", code, exitUsage)
	}
}

// Every example config in configs/ is valid.
func TestCheckExamples(t *testing.T) {
	files, _ := filepath.Glob("../../configs/*.yaml")
	if len(files) == 0 {
		t.Fatal("no example configs found in configs/")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			out, errOut, code := runBin(t, "", "check", "--config", f)
			if code != 0 {
				t.Fatalf("check %s: exit %d\n%s%s", f, code, out, errOut)
			}
			if !strings.Contains(out, "ok") {
				t.Fatalf("no summary: %q", out)
			}
			// The first-run config is the one new users copy: no warnings.
			if filepath.Base(f) == "demo.yaml" && strings.Contains(out, "warning:") {
				t.Errorf("demo.yaml has warnings:\n%s", out)
			}
		})
	}
}

// check reports every problem with its path and line, and exits 1.
func TestCheckReportsAllProblems(t *testing.T) {
	dir := t.TempDir()
	cfg := `gateway:
  id: "bad id!"
  data_dir: /tmp/x
  log: {level: loud}
  colour: blue
broker:
  listeners:
    - {type: carrier-pigeon, address: 127.0.0.1:1883}
    - {type: tcp, address: "not an address"}
devices:
  - name: boiler
    driver: modbus
    transport: rtu
    port: /dev/ttyUSB0
    unit: 300
    points:
      - {name: temperature, table: holding, address: 100, type: float32, order: XYZW}
      - {name: pressure, table: sideways, address: 3, type: int16}
  - name: boiler
    driver: warp
bridge:
  upstream:
    url: ftp://example.com
  forward:
    - {filter: "a/#/b", qos: 3}
  buffer:
    max_bytes: lots
`
	path := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	// Unknown keys and type errors are reported first (decoding stops there).
	_, errOut, code := runBin(t, "", "check", "--config", path)
	if code != exitConfig {
		t.Fatalf("exit %d, want %d\n%s", code, exitConfig, errOut)
	}
	for _, want := range []string{
		`gateway.colour (line 5): unknown key "colour"`,
		"bridge.buffer.max_bytes (line 27)",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("missing %q in:\n%s", want, errOut)
		}
	}

	// Without decode errors, every validation problem is listed with its line.
	cfg = strings.Replace(cfg, "  colour: blue\n", "", 1)
	cfg = strings.Replace(cfg, "max_bytes: lots", "max_bytes: 1MiB", 1)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = runBin(t, "", "check", "--config", path)
	if code != exitConfig {
		t.Fatalf("exit %d, want %d\n%s", code, exitConfig, errOut)
	}
	for _, want := range []string{
		"gateway.id (line 2)",
		"gateway.log.level (line 4)",
		"broker.listeners[0].type (line 7)",
		"broker.listeners[1].address (line 8)",
		"devices[0].unit (line 14)",
		"devices[0].points[0].order (line 16)",
		"devices[0].points[1].table (line 17)",
		"devices[1].name (line 18)",
		"devices[1].driver (line 19)",
		"bridge.upstream.url (line 22)",
		"bridge.forward[0].filter (line 24)",
		"bridge.forward[0].qos (line 24)",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("missing %q in:\n%s", want, errOut)
		}
	}
	if t.Failed() {
		t.Logf("full output:\n%s", errOut)
	}
}

func TestCheckMissingFile(t *testing.T) {
	_, errOut, code := runBin(t, "", "check", "--config", filepath.Join(t.TempDir(), "nope.yaml"))
	if code != exitConfig || !strings.Contains(errOut, "nope.yaml") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}

// doctor: exit 0 when nothing fails (warnings allowed), 3 when a check
// fails, with one line per check.
func TestDoctor(t *testing.T) {
	dir := t.TempDir()
	up := startMosquitto(t, 0)
	cfg := func(port int) string {
		path := filepath.Join(dir, "doctor.yaml")
		body := "gateway: {id: doc, data_dir: " + filepath.Join(dir, "data") + "}\nbridge:\n  upstream: {url: mqtt://127.0.0.1:" + strconv.Itoa(port) + "}\n  forward: [{filter: '#'}]\n"
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	out, errOut, code := runBin(t, "", "doctor", "--config", cfg(up.port))
	if code != 0 || !strings.Contains(out, "ok    upstream") {
		t.Fatalf("doctor with a reachable upstream: exit %d\n%s%s", code, out, errOut)
	}
	out, _, code = runBin(t, "", "doctor", "--config", cfg(freePort(t)))
	if code != exitRuntime || !strings.Contains(out, "FAIL  upstream") {
		t.Fatalf("doctor with an unreachable upstream: exit %d, want %d\n%s", code, exitRuntime, out)
	}
}

// A listener that cannot bind and a data directory already in use are
// runtime failures: exit 3 with the reason, nothing left running.
func TestRunFailures(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	body := fmt.Sprintf("gateway: {id: x, data_dir: %s, http: {address: 127.0.0.1:0}}\nbroker: {listeners: [{type: tcp, address: %s}], auth: {anonymous: true}}\n",
		filepath.Join(dir, "data"), busy.Addr())
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := runBin(t, "", "run", "--config", path)
	if code != exitRuntime || !strings.Contains(errOut, busy.Addr().String()) {
		t.Fatalf("busy port: exit %d, want %d, naming %s:\n%s", code, exitRuntime, busy.Addr(), errOut)
	}

	// A second gateway on the same data directory is refused.
	g := startGW(t, dir, anonHeader)
	second := filepath.Join(dir, "second.yaml")
	body = fmt.Sprintf("gateway: {id: x, data_dir: %s, http: {address: 127.0.0.1:0}}\nbroker: {listeners: [{type: tcp, address: 127.0.0.1:0}], auth: {anonymous: true}}\n", filepath.Join(dir, "data"))
	if err := os.WriteFile(second, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = runBin(t, "", "run", "--config", second)
	if code != exitRuntime || !strings.Contains(errOut, "in use by another fieldgate") {
		t.Fatalf("shared data_dir: exit %d, want %d:\n%s", code, exitRuntime, errOut)
	}
	g.stop()
}
