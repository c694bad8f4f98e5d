package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/fieldgate/fieldgate/broker"
	"github.com/fieldgate/fieldgate/console"
	"github.com/fieldgate/fieldgate/devices"
)

func TestConsoleConfigProblems(t *testing.T) {
	_, ce := parse(t, "gateway: {id: gw}\nconsole:\n  history: 1\n  users:\n    - {username: tech, password_hash: plain, role: admin}\n")
	if ce == nil {
		t.Fatal("bad console section accepted")
	}
	var got []string
	for _, p := range ce.Problems {
		got = append(got, fmt.Sprintf("%s (line %d)", p.Path, p.Line))
	}
	want := "console.history (line 3) console.users[0].password_hash (line 5) console.users[0].role (line 5)"
	if strings.Join(got, " ") != want {
		t.Errorf("problems %q, want %q", got, want)
	}
}

func TestRedactedYAML(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	passFile := filepath.Join(t.TempDir(), "up.pass")
	if err := os.WriteFile(passFile, []byte("file-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, ce := parse(t, fmt.Sprintf(`gateway: {id: gw}
broker:
  auth:
    users: [{username: sensor1, password_hash: %q}]
bridge:
  upstream: {url: "mqtt://gw:upstream-pass@broker.example.com:1883", password_file: %q}
  forward: [{filter: "#"}]
console:
  users: [{username: tech, password_hash: %q, role: write}]
devices:
  - {name: d, driver: sim, topic: "x/{device}/{point}", points: [{name: p, sim: constant, value: 1}]}
`, hash, passFile, hash))
	if ce != nil {
		t.Fatal(ce)
	}
	text, err := redactedYAML(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{string(hash), "upstream-pass", "file-secret"} {
		if strings.Contains(text, secret) {
			t.Errorf("secret %q shown:\n%s", secret, text)
		}
	}
	if strings.Contains(text, "offset: 0") {
		t.Errorf("unused device options shown:\n%s", text)
	}
	for _, kept := range []string{"password_hash: '[redacted]'", "gw:xxxxx@broker.example.com", "password_file: " + passFile, "username: tech", "- name: p", "anonymous: false"} {
		if !strings.Contains(text, kept) {
			t.Errorf("%q missing:\n%s", kept, text)
		}
	}
}

func TestStaleAfter(t *testing.T) {
	minute := time.Minute
	for _, tc := range []struct {
		pc   devices.PointConfig
		want time.Duration
	}{
		{devices.PointConfig{Poll: time.Second}, 4 * time.Second},
		{devices.PointConfig{Poll: time.Second, Deadband: 0.5}, 0},
		{devices.PointConfig{Poll: time.Second, Deadband: 0.5, Heartbeat: &minute}, 63 * time.Second},
		{devices.PointConfig{}, 0},
	} {
		if got := staleAfter(tc.pc); got != tc.want {
			t.Errorf("%+v: %s, want %s", tc.pc, got, tc.want)
		}
	}
}

// runGateway runs a gateway on cfgText (ports 0) until the test ends.
func runGateway(t *testing.T, cfgText string) (*Gateway, string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "fieldgate.yaml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(cfgText, "{{data}}", dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	cfg, err := Load(path, Drivers(log))
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(cfg, Drivers(log), log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !g.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("gateway not ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return g, path
}

const consoleTestConfig = `gateway: {id: gw, data_dir: "{{data}}", http: {address: "127.0.0.1:0"}}
broker:
  listeners: [{type: tcp, address: "127.0.0.1:0"}]
  auth: {anonymous: true}
devices:
  - name: boiler
    driver: sim
    poll: 100ms
    topic: "home/{device}/{point}"
    points:
      - {name: setpoint, sim: constant, value: 60, writable: true, min: 40, max: 80}
      - {name: starts, sim: counter, value: 0, step: 1}
`

func getBody(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A console write travels the MQTT write-back path: the request is
// published on <topic>/set, the devices validate, write and read back, and
// answer on <topic>/set/result as for any client.
func TestConsoleWriteSamePath(t *testing.T) {
	g, _ := runGateway(t, consoleTestConfig)
	results := make(chan string, 10)
	unsub, err := g.broker.Subscribe("home/boiler/setpoint/set/result", func(m broker.Message) { results <- string(m.Payload) })
	if err != nil {
		t.Fatal(err)
	}
	defer unsub()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src := consoleSource{g}
	v, err := src.Write(ctx, "boiler", "setpoint", "65")
	if err != nil || v != 65.0 {
		t.Fatalf("write 65: %v %v", v, err)
	}
	if r := <-results; r != `{"ok":true,"value":65}` {
		t.Errorf("set/result %s", r)
	}
	if _, err := src.Write(ctx, "boiler", "setpoint", "95"); err == nil || err.Error() != "95 is above the maximum 80" {
		t.Errorf("write 95: %v", err)
	}
	if r := <-results; !strings.Contains(r, `"ok":false`) {
		t.Errorf("set/result %s", r)
	}
	if _, err := src.Write(ctx, "boiler", "nope", "1"); err == nil {
		t.Error("write to an unknown point accepted")
	}
}

// The console is served on the ops server and fed live values from the
// point topics; a reload's result shows on the Config page.
func TestConsoleOnOpsServer(t *testing.T) {
	g, path := runGateway(t, consoleTestConfig)
	base := "http://" + g.HTTPAddr()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var d struct {
			Devices []console.DeviceView `json:"devices"`
		}
		_, body := getBody(t, base+"/api/v1/devices")
		if err := json.Unmarshal([]byte(body), &d); err != nil {
			t.Fatalf("%v: %s", err, body)
		}
		if len(d.Devices) == 1 && d.Devices[0].Points[1].Value != nil && d.Devices[0].Points[1].Value.Value.(float64) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no live counter value: %s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body := getBody(t, base+"/metrics"); code != 200 || !strings.Contains(body, "fieldgate_ready 1") {
		t.Errorf("/metrics beside the console: %d", code)
	}
	if code, body := getBody(t, base+"/"); code != 200 || !strings.Contains(body, "Overview") {
		t.Errorf("overview page: %d", code)
	}

	if err := os.WriteFile(path, []byte("gateway: {id: [oops]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := g.Reload(path); err == nil {
		t.Fatal("bad reload accepted")
	}
	var rc console.RunningConfig
	_, body := getBody(t, base+"/api/v1/config")
	if err := json.Unmarshal([]byte(body), &rc); err != nil || rc.LastReload == nil || rc.LastReload.OK || rc.LastReload.Error == "" {
		t.Errorf("last reload after a bad file: %+v (%v)", rc.LastReload, err)
	}
}

// console.address serves the console on its own listener; the ops server
// then keeps only its own endpoints.
func TestConsoleOwnAddress(t *testing.T) {
	g, _ := runGateway(t, consoleTestConfig+"console: {address: \"127.0.0.1:0\"}\n")
	if code, body := getBody(t, "http://"+g.ConsoleAddr()+"/api/v1/overview"); code != 200 || !strings.Contains(body, `"gateway": "gw"`) {
		t.Errorf("console on its own address: %d %s", code, body)
	}
	if code, _ := getBody(t, "http://"+g.HTTPAddr()+"/api/v1/overview"); code != 404 {
		t.Errorf("console also on the ops server: %d", code)
	}
}

func TestConsoleDisabled(t *testing.T) {
	g, _ := runGateway(t, consoleTestConfig+"console: {enabled: false}\n")
	if code, _ := getBody(t, "http://"+g.HTTPAddr()+"/"); code != 404 {
		t.Errorf("disabled console answers %d", code)
	}
	if code, _ := getBody(t, "http://"+g.HTTPAddr()+"/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
}

// selfSigned writes a throwaway certificate and key for 127.0.0.1.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "fieldgate test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "console.crt"), filepath.Join(dir, "console.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// console.address off loopback with TLS: HTTPS only, login required, the
// session cookie Secure.
func TestConsoleTLSLogin(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t, t.TempDir())
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	g, _ := runGateway(t, consoleTestConfig+fmt.Sprintf(`console:
  address: "0.0.0.0:0"
  tls: {cert_file: %q, key_file: %q}
  users: [{username: tech, password_hash: %q, role: write}]
`, certFile, keyFile, hash))
	_, port, _ := net.SplitHostPort(g.ConsoleAddr())
	base := "https://127.0.0.1:" + port
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if resp, err := http.Get("http://127.0.0.1:" + port + "/api/v1/overview"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest { // Go answers plain HTTP on a TLS port with 400
			t.Errorf("plain HTTP on the TLS listener: %d", resp.StatusCode)
		}
	}
	resp, err := c.Get(base + "/api/v1/overview")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("HTTPS without login: %d, want 401", resp.StatusCode)
	}
	resp, err = c.Get(base + "/login")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	csrf := regexp.MustCompile(`name="csrf-token" content="([^"]+)"`).FindSubmatch(page)
	if csrf == nil {
		t.Fatalf("no CSRF token:\n%s", page)
	}
	for _, ck := range resp.Cookies() {
		if !ck.Secure || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode {
			t.Errorf("cookie over TLS: %+v", ck)
		}
	}
	resp, err = c.PostForm(base+"/login", url.Values{"csrf": {string(csrf[1])}, "username": {"tech"}, "password": {"pw"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	resp, err = c.Get(base + "/api/v1/overview")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("HTTPS after login: %d", resp.StatusCode)
	}
}

func TestRateMeter(t *testing.T) {
	var r rateMeter
	t0 := time.Unix(1000, 0)
	for i, tc := range []struct {
		dt   time.Duration
		n    uint64
		want float64
	}{
		{0, 100, 0},
		{500 * time.Millisecond, 150, 0}, // too soon: not measured
		{2 * time.Second, 300, 100},      // 200 in 2 s
		{3 * time.Second, 300, 50},       // nothing in 1 s, smoothed
		{4 * time.Second, 10, 50},        // counter reset: start again
	} {
		if got := r.update(t0.Add(tc.dt), tc.n); got != tc.want {
			t.Errorf("step %d: %v, want %v", i, got, tc.want)
		}
	}
}
