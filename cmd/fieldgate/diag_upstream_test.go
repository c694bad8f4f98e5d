package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// bridgeTo is an anonHeader config bridged to an upstream on port.
func bridgeTo(port int, protocol, upstreamExtra string) string {
	return anonHeader + fmt.Sprintf("bridge:\n  upstream:\n    url: mqtt://127.0.0.1:%d\n    protocol: %q\n    backoff: {min: 200ms, max: 1s}\n%s  forward: [{filter: 'myhome/#'}]\n", port, protocol, upstreamExtra)
}

// An upstream that refuses the login is logged with the reason code, its
// name and what to check, and the delay before the next attempt — not as
// "unreachable".
func TestUpstreamRefusedLogin(t *testing.T) {
	for _, protocol := range []string{"5", "3.1.1"} {
		t.Run("mqtt"+protocol, func(t *testing.T) {
			dir := t.TempDir()
			up := startMosquittoWithLogin(t)
			secret := filepath.Join(dir, "upstream.pass")
			if err := os.WriteFile(secret, []byte("wrong\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			g := startGW(t, dir, bridgeTo(up.port, protocol, "    username: gw1\n    password_file: "+secret+"\n"))
			want := []string{"upstream refused the login (0x8", "check bridge.upstream.username / password_file", "retry_in="}
			eventually(t, 15*time.Second, "the refusal in the log", func() bool {
				log := g.log.String()
				for _, w := range want {
					if !strings.Contains(log, w) {
						return false
					}
				}
				return true
			})
			if strings.Contains(g.log.String(), "unreachable") {
				t.Errorf("a refusal is logged as unreachable:\n%s", g.log.String())
			}
		})
	}
}

// Two gateways with the same gateway.id take over each other's upstream
// session: the log says so and asks whether gateway.id is unique. An
// upstream may say so with DISCONNECT 0x8E (MQTT 5); mosquitto 2.0 just
// closes the connection, right after CONNACK, again and again.
func TestUpstreamSessionTakenOver(t *testing.T) {
	for _, protocol := range []string{"5", "3.1.1"} {
		t.Run("mqtt"+protocol, func(t *testing.T) {
			up := startMosquitto(t, 0)
			cfg := bridgeTo(up.port, protocol, "")
			a := startGW(t, t.TempDir(), cfg)
			b := startGW(t, t.TempDir(), cfg)
			said := func(g *gw) bool {
				log := strings.ReplaceAll(g.log.String(), `\"`, `"`)
				return strings.Contains(log, `same client id "e2e"`) && strings.Contains(log, "is gateway.id unique")
			}
			eventually(t, 30*time.Second, "a take-over in either log", func() bool { return said(a) || said(b) })
		})
	}
}

// A gateway.id left to a host name that images share is warned about, by
// check and at start.
func TestSharedHostNameWarning(t *testing.T) {
	need(t, "unshare")
	dir := t.TempDir()
	path := filepath.Join(dir, "fieldgate.yaml")
	if err := os.WriteFile(path, []byte("gateway: {data_dir: "+dir+"}\nbroker: {auth: {anonymous: true}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("unshare", "--uts", "sh", "-c", `hostname raspberrypi && exec "$0" check --config "$1"`, binPath, path).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	want := `warning: gateway.id (line 1): not set, so it is the host name "raspberrypi", which many installed images share`
	if !strings.Contains(string(out), want) {
		t.Fatalf("missing %q in:\n%s", want, out)
	}
}

// An upstream that cannot be reached says why and what to check, in run's
// log and in doctor.
func TestUpstreamUnreachableHints(t *testing.T) {
	up := startMosquitto(t, 0) // plain MQTT, no TLS
	cert, key := selfSigned(t)
	tlsUp := startMosquitto(t, 0, "certfile "+cert, "keyfile "+key)
	closed := freePort(t)
	for _, c := range []struct {
		name, url, want string
	}{
		{"nothing listens", fmt.Sprintf("mqtt://127.0.0.1:%d", closed), "nothing listens on that host and port: check the port in bridge.upstream.url"},
		{"tls to a plain port", fmt.Sprintf("mqtts://127.0.0.1:%d", up.port), "the upstream does not speak TLS on that port: use mqtt:// or the broker's TLS port"},
		{"unknown host", "mqtt://no-such-host.invalid:1883", "the host name in bridge.upstream.url does not resolve"},
		{"plain mqtt to a tls port", fmt.Sprintf("mqtt://127.0.0.1:%d", tlsUp.port), "the upstream closed the connection instead of answering the MQTT CONNECT: a TLS port needs mqtts://"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := anonHeader + "bridge:\n  upstream:\n    url: " + c.url + "\n  forward: [{filter: '#'}]\n"
			path := writeConfig(t, dir, cfg, freePort(t), freePort(t))
			out, _, code := runBin(t, "", "doctor", "--config", path)
			if code != exitRuntime || !strings.Contains(out, c.want) {
				t.Errorf("doctor: exit %d, want %d and %q in:\n%s", code, exitRuntime, c.want, out)
			}
			g := startGW(t, dir, cfg)
			eventually(t, 15*time.Second, "the hint in the log", func() bool {
				return strings.Contains(g.log.String(), c.want)
			})
		})
	}
}

// selfSigned writes a throwaway certificate and key for 127.0.0.1 where
// mosquitto, which reads them as user mosquitto, can read them.
func selfSigned(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "fieldgate-cert")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o644); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// startMosquittoWithLogin starts a mosquitto that accepts only user gw1
// with password "right". Started as root, mosquitto reads its password
// file as user mosquitto, so the file lives outside the test's private
// temporary directory.
func startMosquittoWithLogin(t testing.TB) *mosquitto {
	t.Helper()
	need(t, "mosquitto_passwd")
	pwDir, err := os.MkdirTemp("", "fieldgate-upstream-pw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(pwDir) })
	if err := os.Chmod(pwDir, 0o755); err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(pwDir, "mosquitto.passwd")
	if out, err := exec.Command("mosquitto_passwd", "-c", "-b", pw, "gw1", "right").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v: %s", err, out)
	}
	if err := os.Chmod(pw, 0o644); err != nil {
		t.Fatal(err)
	}
	return startMosquitto(t, 0, "allow_anonymous false", "password_file "+pw)
}
