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
	"time"

	"github.com/creack/pty"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sys/unix"
)

// `fieldgate passwd` on a terminal prompts twice without echo; two
// different entries are refused.
func TestPasswdPrompt(t *testing.T) {
	for _, c := range []struct {
		name          string
		first, second string
		code          int
		want          string
	}{
		{"same twice", "s3cret-pw", "s3cret-pw", 0, "$2a$"},
		{"mismatch", "s3cret-pw", "other-pw", exitUsage, "the passwords do not match"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(binPath, "passwd")
			tty, err := pty.Start(cmd)
			if err != nil {
				t.Fatal(err)
			}
			defer tty.Close()
			var term syncBuffer
			copied := make(chan struct{})
			go func() { _, _ = io.Copy(&term, tty); close(copied) }()
			// type only once the prompt is shown and echo is off, as a
			// person would
			typeAfter := func(prompt, text string) {
				t.Helper()
				eventually(t, 10*time.Second, "prompt "+prompt+" with echo off", func() bool {
					st, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
					return err == nil && st.Lflag&unix.ECHO == 0 && strings.Contains(term.String(), prompt)
				})
				fmt.Fprint(tty, text+"\r")
			}
			typeAfter("Password: ", c.first)
			typeAfter("Password again: ", c.second)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatal("passwd did not finish")
			}
			<-copied
			got := term.String()
			if code := cmd.ProcessState.ExitCode(); code != c.code {
				t.Errorf("exit %d, want %d", code, c.code)
			}
			for _, w := range []string{"Password: ", "Password again: ", c.want} {
				if !strings.Contains(got, w) {
					t.Errorf("missing %q", w)
				}
			}
			if strings.Contains(got, "s3cret-pw") {
				t.Errorf("the password was echoed")
			}
			if c.code == 0 {
				hash := got[strings.Index(got, "$2a$"):]
				hash = strings.TrimSpace(hash)
				if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(c.first)); err != nil {
					t.Errorf("hash %q does not match: %v", hash, err)
				}
			}
			if t.Failed() {
				t.Logf("terminal:\n%q", got)
			}
		})
	}
}

// A listener on a busy port: the error names the port and the program
// that holds it, on one line, and the messages carry no doubled prefix.
func TestRunBusyPortNamesOwner(t *testing.T) {
	for _, c := range []struct{ name, section string }{
		{"mqtt listener", "broker: {listeners: [{type: tcp, address: %s}], auth: {anonymous: true}}\ngateway: {id: x, data_dir: %s, http: {address: 127.0.0.1:0}}\n"},
		{"ops http", "broker: {listeners: [{type: tcp, address: 127.0.0.1:0}], auth: {anonymous: true}}\ngateway: {id: x, data_dir: %[2]s, http: {address: %[1]s}}\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			busy, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer busy.Close()
			dir := t.TempDir()
			path := filepath.Join(dir, "c.yaml")
			if err := os.WriteFile(path, []byte(fmt.Sprintf(c.section, busy.Addr(), filepath.Join(dir, "data"))), 0o600); err != nil {
				t.Fatal(err)
			}
			_, errOut, code := runBin(t, "", "run", "--config", path)
			port := busy.Addr().(*net.TCPAddr).Port
			want := fmt.Sprintf("port %d is already in use by fieldgate.test (pid %d)", port, os.Getpid())
			if code != exitRuntime || !strings.Contains(errOut, want) {
				t.Errorf("exit %d, want %d and %q in:\n%s", code, exitRuntime, want, errOut)
			}
			for _, doubled := range []string{"broker: broker:", "bridge: bridge:", "devices: devices:"} {
				if strings.Contains(errOut, doubled) {
					t.Errorf("doubled prefix %q in:\n%s", doubled, errOut)
				}
			}
		})
	}
}

// The README's quick tour, as written: hash a password with passwd, put it
// under broker.auth in the demo config, reload, then subscribe and publish
// with that user.
func TestQuickTour(t *testing.T) {
	need(t, "mosquitto_sub", "mosquitto_pub")
	raw, err := os.ReadFile("../../configs/demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	body := strings.NewReplacer(
		"127.0.0.1:1883", "127.0.0.1:{{mqtt}}",
		"127.0.0.1:9180", "127.0.0.1:{{http}}",
		"127.0.0.1:1884", fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		"./data", "{{data}}",
	).Replace(string(raw))
	g := startGW(t, t.TempDir(), body)

	out, errOut, code := runBin(t, "sensor1-secret\n", "passwd")
	if code != 0 {
		t.Fatalf("passwd: exit %d: %s", code, errOut)
	}
	const anon = "  auth:\n    anonymous: true\n"
	if !strings.Contains(body, anon) {
		t.Fatalf("configs/demo.yaml no longer has %q where the README puts the users", anon)
	}
	withUser := strings.Replace(body, anon, anon+"    users:\n      - {username: sensor1, password_hash: \""+strings.TrimSpace(out)+"\"}\n", 1)
	writeConfig(t, g.dir, withUser, g.mqttPort, g.httpPort)
	if err := g.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the reload", func() bool {
		return strings.Contains(g.log.String(), "configuration reloaded")
	})
	port := fmt.Sprint(g.mqttPort)
	s := startSub(t, "-h", "127.0.0.1", "-p", port, "-V", "mqttv5", "-u", "sensor1", "-P", "sensor1-secret", "-t", "myhome/#")
	if out, err := mosqPub("-h", "127.0.0.1", "-p", port, "-V", "mqttv311", "-u", "sensor1", "-P", "sensor1-secret", "-t", "myhome/hall/temperature", "-m", "21.5", "-q", "1", "-r"); err != nil {
		t.Fatalf("mosquitto_pub as sensor1: %v: %s", err, out)
	}
	eventually(t, 10*time.Second, "the retained reading as sensor1", func() bool {
		return s.has("myhome/hall/temperature 21.5")
	})
}
