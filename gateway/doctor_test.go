package gateway

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fieldgate/fieldgate/bridge"
	"github.com/fieldgate/fieldgate/buffer"
	"github.com/fieldgate/fieldgate/devices"
)

// result is one parsed line of Doctor's output.
type result struct{ Status, Check, Detail string }

var doctorLine = regexp.MustCompile(`^(ok|warn|FAIL) +([^:]+): (.+)$`)

// runDoctor runs d on cfg and parses its output, one result per line.
func runDoctor(t *testing.T, d *doctor, cfg *Config) (bool, []result) {
	t.Helper()
	var out bytes.Buffer
	passed := d.run(context.Background(), cfg, &out)
	var rs []result
	for _, line := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		m := doctorLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("output line %q is not `ok|warn|FAIL  <check>: <detail>`", line)
		}
		rs = append(rs, result{m[1], m[2], m[3]})
	}
	return passed, rs
}

// find returns the result of check.
func find(t *testing.T, rs []result, check string) result {
	t.Helper()
	for _, r := range rs {
		if r.Check == check {
			return r
		}
	}
	t.Fatalf("no %q check in %v", check, rs)
	return result{}
}

func testDoctor(s doctorSubject) *doctor {
	return &doctor{subject: s, now: time.Now, synced: func() (bool, error) { return true, nil }}
}

// stranger is neither the owner of the test's files nor in their group.
var stranger = doctorSubject{name: "stranger", uid: 4242, gids: []int{4242}}

// openDir is a temporary directory writable by everyone.
func openDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

func baseConfig(dataDir string) *Config {
	return &Config{Gateway: GatewayConfig{DataDir: dataDir}}
}

func TestDoctorDataDir(t *testing.T) {
	tmp := t.TempDir()
	readOnly := filepath.Join(tmp, "ro")
	open := filepath.Join(tmp, "open")
	file := filepath.Join(tmp, "file")
	for dir, mode := range map[string]os.FileMode{readOnly: 0o555, open: 0o777} {
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	self := doctorCurrentSubject()
	self.self = true
	for _, tc := range []struct {
		name    string
		subject doctorSubject
		dir     string
		want    string // status of "data dir"
		pass    bool
		detail  string
	}{
		{"writable by this process", self, t.TempDir(), "ok", true, "is writable by user"},
		{"read-only for the service user", stranger, readOnly, "FAIL", false, "is not writable by user stranger"},
		{"open to everyone", stranger, open, "ok", true, "is writable by user stranger"},
		{"service user before the first start", doctorSubject{name: ServiceUser, uid: 4242, gids: []int{4242}}, serviceStateDir + "/doctor-test/none", "warn", true, "systemd creates it"},
		{"service user outside its StateDirectory", doctorSubject{name: ServiceUser, uid: 4242, gids: []int{4242}}, open, "warn", true, "ReadWritePaths=" + open},
		{"missing under a writable parent", self, filepath.Join(t.TempDir(), "a", "b"), "warn", true, "does not exist"},
		{"missing under a read-only parent", stranger, filepath.Join(readOnly, "data"), "FAIL", false, "is not writable"},
		{"a file", self, file, "FAIL", false, "is not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			passed, rs := runDoctor(t, testDoctor(tc.subject), baseConfig(tc.dir))
			r := find(t, rs, "data dir")
			if r.Status != tc.want || !strings.Contains(r.Detail, tc.detail) {
				t.Errorf("data dir = %+v, want %s containing %q", r, tc.want, tc.detail)
			}
			if passed != tc.pass {
				t.Errorf("Doctor passed = %v, want %v (%v)", passed, tc.pass, rs)
			}
		})
	}
}

func TestWithinDir(t *testing.T) {
	for _, tc := range []struct {
		path string
		want bool
	}{
		{"/var/lib/fieldgate", true},
		{"/var/lib/fieldgate/", true},
		{"/var/lib/fieldgate/buffer", true},
		{"/var/lib/fieldgate2", false},
		{"/var/lib/fieldgate/../other", false},
		{"/srv/data", false},
	} {
		if got := withinDir(tc.path, serviceStateDir); got != tc.want {
			t.Errorf("withinDir(%q) = %v, want %v", tc.path, got, tc.want)
		}
	}
}

func TestDoctorDiskSpace(t *testing.T) {
	cfg := baseConfig(t.TempDir())
	// A quota no disk here has twice of.
	cfg.Bridge = &bridge.Config{Upstream: bridge.UpstreamConfig{URL: "mqtt://127.0.0.1:1"}, Buffer: buffer.Config{MaxBytes: 1 << 60}}
	_, rs := runDoctor(t, testDoctor(doctorCurrentSubject()), cfg)
	r := find(t, rs, "disk space")
	if r.Status != "warn" || !strings.Contains(r.Detail, "below") {
		t.Errorf("disk space = %+v, want a warning: free space below the buffer quota", r)
	}

	cfg.Bridge.Buffer.MaxBytes = 64 * buffer.KiB
	_, rs = runDoctor(t, testDoctor(doctorCurrentSubject()), cfg)
	var st syscall.Statfs_t
	if err := syscall.Statfs(cfg.Gateway.DataDir, &st); err != nil {
		t.Fatal(err)
	}
	want := "ok"
	if int64(st.Bavail)*st.Bsize < 1<<30 {
		want = "warn" // this machine's temp dir has less than 1 GiB free
	}
	if r := find(t, rs, "disk space"); r.Status != want || !strings.Contains(r.Detail, "free in") {
		t.Errorf("disk space = %+v, want %s", r, want)
	}
}

func TestDoctorSerial(t *testing.T) {
	tmp := t.TempDir()
	link := filepath.Join(tmp, "usb-FTDI_A1B2C3-if00-port0")
	if err := os.Symlink("/dev/null", link); err != nil {
		t.Fatal(err)
	}
	// A "port" that is rw for its group only (like /dev/ttyUSB0, root:dialout 0660).
	groupOnly := filepath.Join(tmp, "ttyGroup")
	if err := os.WriteFile(groupOnly, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(groupOnly, 0o660); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(groupOnly)
	if err != nil {
		t.Fatal(err)
	}
	gid := int(fi.Sys().(*syscall.Stat_t).Gid)
	member := doctorSubject{name: "member", uid: 4242, gids: []int{4242, gid}}

	for _, tc := range []struct {
		name    string
		subject doctorSubject
		port    string
		usb     *devices.USBConfig
		want    string
		detail  string
	}{
		{"missing port", stranger, "/dev/serial/by-id/usb-nothing-here", nil, "FAIL", "not found"},
		{"missing usb adapter", stranger, "", &devices.USBConfig{VID: "dead", PID: "beef", Serial: "none"}, "FAIL", "vid dead pid beef"},
		{"by-id link to a device open to all", stranger, link, nil, "ok", link + " → /dev/null is read-write for user stranger"},
		{"group-only port, user not in the group", stranger, groupOnly, nil, "FAIL", "not readable and writable by user stranger"},
		{"group-only port, user in the group", member, groupOnly, nil, "warn", "not a character device"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig(openDir(t))
			cfg.Devices = []devices.DeviceConfig{
				{Name: "meter", Driver: "modbus", Port: tc.port, USB: tc.usb},
				{Name: "demo", Driver: "sim"}, // no port: not checked
			}
			passed, rs := runDoctor(t, testDoctor(tc.subject), cfg)
			r := find(t, rs, "serial meter")
			if r.Status != tc.want || !strings.Contains(r.Detail, tc.detail) {
				t.Errorf("serial meter = %+v, want %s containing %q", r, tc.want, tc.detail)
			}
			if passed != (tc.want != "FAIL") {
				t.Errorf("Doctor passed = %v with serial %s", passed, r.Status)
			}
			for _, r := range rs {
				if r.Check == "serial demo" {
					t.Errorf("device without a port was checked: %+v", r)
				}
			}
		})
	}
}

func TestSubjectMay(t *testing.T) {
	tmp := t.TempDir()
	f := filepath.Join(tmp, "f")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	fi0, err := os.Stat(f)
	if err != nil {
		t.Fatal(err)
	}
	st := fi0.Sys().(*syscall.Stat_t)
	owner := doctorSubject{uid: int(st.Uid), gids: []int{999999}}
	group := doctorSubject{uid: 4242, gids: []int{int(st.Gid)}}
	for _, tc := range []struct {
		mode                   os.FileMode
		owner, group, stranger bool
	}{
		{0o600, true, false, false},
		{0o660, true, true, false},
		{0o606, true, false, true},
		{0o460, false, true, false}, // owner bits deny even where group bits allow
		{0o666, true, true, true},
	} {
		if err := os.Chmod(f, tc.mode); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		got := []bool{owner.may(fi, 6), group.may(fi, 6), stranger.may(fi, 6)}
		want := []bool{tc.owner && owner.uid != 0 || owner.uid == 0, tc.group, tc.stranger}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("mode %v: rw for owner, group, other (-want +got):\n%s", tc.mode, diff)
		}
	}
}

func TestDoctorClock(t *testing.T) {
	for _, tc := range []struct {
		name   string
		now    time.Time
		synced func() (bool, error)
		want   string
		detail string
	}{
		{"synchronised", time.Now(), func() (bool, error) { return true, nil }, "ok", "synchronised"},
		{"not synchronised", time.Now(), func() (bool, error) { return false, nil }, "warn", "not synchronised"},
		{"unknown", time.Now(), func() (bool, error) { return false, errors.New("no adjtimex") }, "warn", "no adjtimex"},
		{"1970 after boot without RTC", time.Unix(3600, 0), func() (bool, error) { return false, nil }, "FAIL", "the clock is wrong"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := testDoctor(doctorCurrentSubject())
			d.now, d.synced = func() time.Time { return tc.now }, tc.synced
			passed, rs := runDoctor(t, d, baseConfig(t.TempDir()))
			if r := find(t, rs, "clock"); r.Status != tc.want || !strings.Contains(r.Detail, tc.detail) {
				t.Errorf("clock = %+v, want %s containing %q", r, tc.want, tc.detail)
			}
			if passed != (tc.want != "FAIL") {
				t.Errorf("Doctor passed = %v", passed)
			}
		})
	}
}

func TestClockSynchronized(t *testing.T) {
	// Whether this machine is synchronised is not ours to assert; that the
	// kernel (or timedatectl) answers is.
	if _, err := ClockSynchronized(); err != nil {
		t.Fatalf("ClockSynchronized: %v", err)
	}
}

// serve accepts connections on ln until it is closed, handing each to
// handle; the returned function closes ln and waits for every goroutine.
func serve(t *testing.T, ln net.Listener, handle func(net.Conn)) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
}

// connack311 is a minimal MQTT 3.1.1 upstream: it reads the CONNECT,
// accepts it and waits for the client to go.
func connack311(c net.Conn) {
	buf := make([]byte, 512)
	if _, err := c.Read(buf); err != nil {
		return
	}
	if _, err := c.Write([]byte{0x20, 0x02, 0x00, 0x00}); err != nil {
		return
	}
	_, _ = io.Copy(io.Discard, c)
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func TestDoctorUpstreamTCP(t *testing.T) {
	ln := listen(t)
	serve(t, ln, connack311)
	closed := listen(t)
	closedAddr := closed.Addr().String()
	closed.Close()

	for _, tc := range []struct {
		name, url, want, detail string
	}{
		{"reachable", "mqtt://" + ln.Addr().String(), "ok", "reachable"},
		{"refused", "mqtt://" + closedAddr, "FAIL", "refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig(t.TempDir())
			cfg.Bridge = &bridge.Config{Upstream: bridge.UpstreamConfig{URL: tc.url, ConnectTimeout: 10 * time.Second}}
			passed, rs := runDoctor(t, testDoctor(doctorCurrentSubject()), cfg)
			if r := find(t, rs, "upstream"); r.Status != tc.want || !strings.Contains(r.Detail, tc.detail) {
				t.Errorf("upstream = %+v, want %s containing %q", r, tc.want, tc.detail)
			}
			if passed != (tc.want != "FAIL") {
				t.Errorf("Doctor passed = %v", passed)
			}
			for _, r := range rs {
				if r.Check == "upstream tls" {
					t.Errorf("plain mqtt checked TLS: %+v", r)
				}
			}
		})
	}

	_, rs := runDoctor(t, testDoctor(doctorCurrentSubject()), baseConfig(t.TempDir()))
	if r := find(t, rs, "upstream"); r.Status != "ok" || !strings.Contains(r.Detail, "no bridge") {
		t.Errorf("without bridge: upstream = %+v", r)
	}
}

func TestDoctorUpstreamAddr(t *testing.T) {
	for raw, want := range map[string]string{
		"mqtt://h":          "h:1883",
		"mqtts://h":         "h:8883",
		"ws://h/mqtt":       "h:80",
		"wss://h/mqtt":      "h:443",
		"mqtts://h:9000":    "h:9000",
		"tcp://[::1]:1884":  "[::1]:1884",
		"ssl://broker.test": "broker.test:8883",
	} {
		got, _, _, err := doctorUpstreamAddr(raw)
		if err != nil || got != want {
			t.Errorf("doctorUpstreamAddr(%q) = %q, %v; want %q", raw, got, err, want)
		}
	}
	if _, _, _, err := doctorUpstreamAddr("http://h"); err == nil {
		t.Error("http:// accepted")
	}
}

// testCA is a throwaway certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // PEM
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "fieldgate test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour * 365),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, file: file}
}

// server issues a certificate for name (and 127.0.0.1) valid from notBefore
// to notAfter.
func (ca *testCA) server(t *testing.T, name string, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestDoctorUpstreamTLS(t *testing.T) {
	ca := newTestCA(t)
	now := time.Now()
	for _, tc := range []struct {
		name     string
		notAfter time.Time
		tls      bridge.TLSConfig
		want     string
		detail   string
	}{
		{"valid", now.Add(90 * 24 * time.Hour), bridge.TLSConfig{CAFile: ca.file, ServerName: "broker.test"}, "ok", "valid until"},
		{"expires in 10 days", now.Add(10 * 24 * time.Hour), bridge.TLSConfig{CAFile: ca.file, ServerName: "broker.test"}, "warn", "expires"},
		{"expired", now.Add(-time.Hour), bridge.TLSConfig{CAFile: ca.file, ServerName: "broker.test"}, "FAIL", "expired"},
		{"unknown CA (system roots)", now.Add(90 * 24 * time.Hour), bridge.TLSConfig{ServerName: "broker.test"}, "FAIL", "unknown authority"},
		{"wrong server name", now.Add(90 * 24 * time.Hour), bridge.TLSConfig{CAFile: ca.file, ServerName: "other.test"}, "FAIL", "other.test"},
		{"IP in the URL, no server name", now.Add(90 * 24 * time.Hour), bridge.TLSConfig{CAFile: ca.file}, "ok", "valid until"},
		{"verification off", now.Add(90 * 24 * time.Hour), bridge.TLSConfig{InsecureSkipVerify: true}, "warn", "insecure_skip_verify"},
		{"missing ca file", now.Add(90 * 24 * time.Hour), bridge.TLSConfig{CAFile: "/nonexistent/ca.pem"}, "FAIL", "ca_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cert := ca.server(t, "broker.test", now.Add(-2*time.Hour), tc.notAfter)
			ln := tls.NewListener(listen(t), &tls.Config{Certificates: []tls.Certificate{cert}})
			serve(t, ln, func(c net.Conn) {
				// The handshake's outcome is the client's to judge.
				if c.(*tls.Conn).Handshake() == nil {
					connack311(c)
				}
			})
			cfg := baseConfig(t.TempDir())
			// A generous connect timeout: this is not a speed test.
			cfg.Bridge = &bridge.Config{Upstream: bridge.UpstreamConfig{URL: "mqtts://" + ln.Addr().String(), TLS: tc.tls, ConnectTimeout: 10 * time.Second}}
			passed, rs := runDoctor(t, testDoctor(doctorCurrentSubject()), cfg)
			if r := find(t, rs, "upstream"); r.Status != "ok" {
				t.Errorf("upstream = %+v, want ok", r)
			}
			r := find(t, rs, "upstream tls")
			if r.Status != tc.want || !strings.Contains(r.Detail, tc.detail) {
				t.Errorf("upstream tls = %+v, want %s containing %q", r, tc.want, tc.detail)
			}
			if passed != (tc.want != "FAIL") {
				t.Errorf("Doctor passed = %v", passed)
			}
		})
	}
}

// TestDoctorPublic runs the exported entry point on a healthy configuration.
func TestDoctorPublic(t *testing.T) {
	ln := listen(t)
	serve(t, ln, connack311)
	// Doctor run as root checks for ServiceUser where that user exists.
	cfg := baseConfig(openDir(t))
	cfg.Devices = []devices.DeviceConfig{{Name: "null", Driver: "serial", Port: "/dev/null"}}
	cfg.Bridge = &bridge.Config{Upstream: bridge.UpstreamConfig{URL: "mqtt://" + ln.Addr().String()}, Buffer: buffer.Config{MaxBytes: 64 * buffer.KiB}}
	var out bytes.Buffer
	passed := Doctor(context.Background(), cfg, &out)
	var checks []string
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		m := doctorLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("bad line %q", line)
		}
		checks = append(checks, m[2])
		if m[1] == "FAIL" && m[2] != "clock" {
			t.Errorf("unexpected failure: %s", line)
		}
	}
	if diff := cmp.Diff([]string{"serial null", "data dir", "disk space", "data dir lock", "clock", "upstream", "upstream login"}, checks); diff != "" {
		t.Errorf("checks (-want +got):\n%s", diff)
	}
	if !passed && !strings.Contains(out.String(), "FAIL  clock") {
		t.Errorf("Doctor failed:\n%s", out.String())
	}
}
