package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The reload log lists what changed and names each key that needs a
// restart.
func TestReloadSaysWhatChanged(t *testing.T) {
	const before = anonHeader + `  limits: {max_clients: 100}
devices:
  - name: hall
    driver: sim
    points: [{name: temp, sim: sine, min: 1, max: 2}, {name: door, sim: toggle}]
`
	g := startGW(t, t.TempDir(), before)
	after := strings.Replace(before, "  auth: {anonymous: true}\n", "  auth:\n    anonymous: true\n    acl: [{username: '*', subscribe: ['#'], publish: ['#']}]\n", 1)
	after = strings.Replace(after, "max_clients: 100", "max_clients: 200", 1)
	after = strings.Replace(after, "  id: e2e\n", "  id: e2e\n  log: {level: debug}\n", 1)
	after = strings.Replace(after, "{name: door, sim: toggle}", "{name: light, sim: toggle}", 1)
	after += "  - name: cellar\n    driver: sim\n    points: [{name: temp, sim: sine, min: 1, max: 2}]\n"
	writeConfig(t, g.dir, after, g.mqttPort, g.httpPort)
	if err := g.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	var line string
	eventually(t, 10*time.Second, "the reload line", func() bool {
		for _, l := range strings.Split(g.log.String(), "\n") {
			if strings.Contains(l, "configuration reloaded") {
				line = l
				return true
			}
		}
		return false
	})
	for _, want := range []string{
		"these keys need a restart and were not applied: gateway.log.level, broker.limits.max_clients",
		"devices added: cellar",
		"device hall changed (points added: light; points removed: door)",
		"broker.auth.acl changed (1 rules, were 0)",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("missing %q in %s", want, line)
		}
	}
}

// fieldgate version prints the version, the commit and the build date; the
// same build is in /metrics and on $SYS/broker/version.
func TestBuildInfo(t *testing.T) {
	out, _, code := runBin(t, "", "version")
	if code != 0 || !strings.HasPrefix(out, "fieldgate dev (commit ") || !strings.Contains(out, ", built ") {
		t.Fatalf("version: exit %d, %q", code, out)
	}
	g := startGW(t, t.TempDir(), anonHeader)
	if m := g.metrics(t); !strings.Contains(m, `fieldgate_build_info{commit="unknown",date="unknown",goversion="go`) || !strings.Contains(m, `version="dev"} 1`) {
		t.Errorf("no fieldgate_build_info in /metrics:\n%s", m)
	}
	s := startSub(t, "-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-t", "$SYS/broker/version")
	eventually(t, 15*time.Second, "$SYS/broker/version", func() bool { return len(s.snapshot()) > 0 })
	if got := s.snapshot()[0]; got != "$SYS/broker/version dev" {
		t.Errorf("$SYS/broker/version = %q, want fieldgate's version", got)
	}
}

// systemctl reload runs `fieldgate check` before SIGHUP: with an invalid
// file the first ExecReload fails (exit 1), so systemd reports the reload
// as failed and never signals the gateway.
func TestSystemdReloadChecksFirst(t *testing.T) {
	f, err := os.Open("../../systemd/fieldgate.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var start string
	var reload []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "ExecStart="); ok {
			start = v
		}
		if v, ok := strings.CutPrefix(sc.Text(), "ExecReload="); ok {
			reload = append(reload, v)
		}
	}
	cfg := strings.TrimPrefix(start, "/usr/bin/fieldgate run ")
	if len(reload) != 2 || reload[0] != "/usr/bin/fieldgate check "+cfg || reload[1] != "/bin/kill -HUP $MAINPID" {
		t.Fatalf("ExecReload = %q, want check %s then kill -HUP", reload, cfg)
	}
	// The check ExecReload runs, on an invalid file: exit 1.
	bad := filepath.Join(t.TempDir(), "fieldgate.yaml")
	if err := os.WriteFile(bad, []byte("gateway:\n  id: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := strings.Fields(strings.Replace(reload[0], "/etc/fieldgate/fieldgate.yaml", bad, 1))[1:]
	err = exec.Command(binPath, args...).Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitConfig {
		t.Fatalf("%v on an invalid file: %v, want exit %d", args, err, exitConfig)
	}
}
