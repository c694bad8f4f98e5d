package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// doctor covers the field: a real login to the upstream with the
// configured credentials, Modbus TCP endpoints, secret files and the data
// directory's lock, one line each.
func TestDoctorField(t *testing.T) {
	up := startMosquittoWithLogin(t)

	modbusUp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer modbusUp.Close()
	modbusDown := freePort(t)

	for _, c := range []struct {
		name     string
		secret   string // content of the upstream password file
		protocol string
		extra    string // devices section
		code     int
		want     []string
	}{
		{"right password", "right\n", "5", "", 0, []string{
			"ok    upstream login: MQTT 5 CONNECT accepted as username gw1 (client id doc-doctor",
		}},
		{"wrong password mqtt5", "wrong\n", "5", "", exitRuntime, []string{
			"FAIL  upstream login: upstream refused the login (0x8", "check bridge.upstream.username / password_file", "(username gw1, client id doc-doctor)",
		}},
		{"wrong password mqtt3.1.1", "wrong\n", "3.1.1", "", exitRuntime, []string{
			"FAIL  upstream login: upstream refused the login (0x8", "check bridge.upstream.username / password_file",
		}},
		{"modbus tcp endpoints", "right\n", "5", fmt.Sprintf(`devices:
  - {name: meter, driver: modbus, transport: tcp, address: %s, points: [{name: p, table: input, address: 0, type: uint16}]}
  - {name: inverter, driver: modbus, transport: tcp, address: 127.0.0.1:%d, points: [{name: p, table: input, address: 0, type: uint16}]}
`, modbusUp.Addr(), modbusDown), exitRuntime, []string{
			"ok    modbus tcp meter: " + modbusUp.Addr().String() + " reachable",
			fmt.Sprintf("FAIL  modbus tcp inverter: 127.0.0.1:%d: dial tcp 127.0.0.1:%d: connect: connection refused (check the device's address and that nothing blocks port %d)", modbusDown, modbusDown, modbusDown),
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			secret := filepath.Join(dir, "upstream.pass")
			if err := os.WriteFile(secret, []byte(c.secret), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := fmt.Sprintf("gateway: {id: doc, data_dir: %s}\nbroker: {auth: {anonymous: true}}\n%sbridge:\n  upstream:\n    url: mqtt://127.0.0.1:%d\n    protocol: %q\n    username: gw1\n    password_file: %s\n  forward: [{filter: '#'}]\n",
				filepath.Join(dir, "data"), c.extra, up.port, c.protocol, secret)
			path := filepath.Join(dir, "fieldgate.yaml")
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			out, errOut, code := runBin(t, "", "doctor", "--config", path)
			if code != c.code {
				t.Errorf("exit %d, want %d", code, c.code)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("missing %q", w)
				}
			}
			if t.Failed() {
				t.Logf("doctor:\n%s%s", out, errOut)
			}
		})
	}
}

// doctor names the running gateway that holds the data directory.
func TestDoctorDataDirLock(t *testing.T) {
	dir := t.TempDir()
	g := startGW(t, dir, anonHeader)
	out, errOut, _ := runBin(t, "", "doctor", "--config", g.config)
	want := fmt.Sprintf("ok    data dir lock: %s is in use by a running gateway (pid %d, fieldgate): a second `fieldgate run` on it is refused", filepath.Join(dir, "data"), g.cmd.Process.Pid)
	if !strings.Contains(out, want) {
		t.Errorf("missing %q in:\n%s%s", want, out, errOut)
	}
	// run names it too
	second := filepath.Join(t.TempDir(), "second.yaml")
	body := fmt.Sprintf("gateway: {id: x, data_dir: %s, http: {address: 127.0.0.1:0}}\nbroker: {listeners: [{type: tcp, address: 127.0.0.1:0}], auth: {anonymous: true}}\n", filepath.Join(dir, "data"))
	if err := os.WriteFile(second, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := runBin(t, "", "run", "--config", second)
	if want := fmt.Sprintf("in use by another fieldgate process (pid %d, fieldgate)", g.cmd.Process.Pid); code != exitRuntime || !strings.Contains(errOut, want) {
		t.Errorf("exit %d, want %d and %q:\n%s", code, exitRuntime, want, errOut)
	}
}

// doctor run by the service user (here: nobody) reports secret files it
// cannot read, with what to do.
func TestDoctorSecretFiles(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run doctor as another user")
	}
	pub, bin := publicBinary(t)
	secret := filepath.Join(pub, "upstream.pass")
	if err := os.WriteFile(secret, []byte("pw\n"), 0o600); err != nil { // root's only
		t.Fatal(err)
	}
	private := filepath.Join(t.TempDir(), "ca.pem") // in a 0700 directory
	if err := os.WriteFile(private, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(pub, "fieldgate.yaml")
	cfg := fmt.Sprintf("gateway: {id: doc, data_dir: %s}\nbroker: {auth: {anonymous: true}}\nbridge:\n  upstream:\n    url: mqtts://127.0.0.1:%d\n    password_file: %s\n    tls: {ca_file: %s}\n  forward: [{filter: '#'}]\n",
		filepath.Join(pub, "data"), freePort(t), secret, private)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "doctor", "--config", cfgPath)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, _ := cmd.CombinedOutput()
	for _, want := range []string{
		"FAIL  file bridge.upstream.password_file: " + secret + " is not readable by user nobody (mode 0600, owner 0:root): chgrp fieldgate " + secret + " && chmod 0640 " + secret,
		"FAIL  file bridge.upstream.tls.ca_file: " + private + ": user nobody cannot enter directory " + filepath.Dir(filepath.Dir(private)) + " (mode 0700)",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
}

// publicBinary copies the binary into a fresh directory that every user
// can enter (the test binary's own directory is private) and returns both.
func publicBinary(t *testing.T) (dir, bin string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "fieldgate-public")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(dir, "fieldgate")
	src, err := os.Open(binPath)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, bin
}

// A config file the service user cannot read: check says so and how to fix
// it.
func TestCheckUnreadableConfig(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run check as another user")
	}
	dir, bin := publicBinary(t)
	path := filepath.Join(dir, "fieldgate.yaml")
	if err := os.WriteFile(path, []byte("gateway: {id: x}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "check", "--config", path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, _ := cmd.CombinedOutput()
	want := "read config: open " + path + ": permission denied (the gateway runs as user fieldgate under systemd: chgrp fieldgate " + path + " && chmod 0640 " + path + ")"
	if cmd.ProcessState.ExitCode() != exitConfig || !strings.Contains(string(out), want) {
		t.Errorf("exit %d, want %d and %q in:\n%s", cmd.ProcessState.ExitCode(), exitConfig, want, out)
	}
}
