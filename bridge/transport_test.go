package bridge

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
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/buffer"
)

// writeCert issues a certificate signed by parent (self-signed when parent
// is nil) and writes <name>.pem and <name>.key.
func writeCert(t *testing.T, dir, name string, tmpl *x509.Certificate, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o644); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// throwawayPKI writes ca, server (127.0.0.1, "upstream.test") and client
// certificates into dir.
func throwawayPKI(t *testing.T, dir string) {
	now := time.Now()
	ca, caKey := writeCert(t, dir, "ca", &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}, nil, nil)
	writeCert(t, dir, "server", &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "upstream.test"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		DNSNames: []string{"upstream.test"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}, ca, caKey)
	writeCert(t, dir, "client", &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "gw1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}, ca, caKey)
}

// (f) mqtts:// with client certificates (mosquitto require_certificate),
// ws:// and wss://, each over MQTT 5 and 3.1.1.
func TestTransports(t *testing.T) {
	t.Parallel()
	// mosquitto started as root reads certificates after dropping to its
	// own user: make the throwaway PKI world-readable.
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	throwawayPKI(t, dir)
	plain, tlsPort, wsPort, wssPort := freePort(t), freePort(t), freePort(t), freePort(t)
	tlsFiles := fmt.Sprintf("cafile %s\ncertfile %s\nkeyfile %s\n",
		filepath.Join(dir, "ca.pem"), filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key"))
	startMosquitto(t, fmt.Sprintf("listener %d 127.0.0.1\n"+
		"listener %d 127.0.0.1\n%srequire_certificate true\n"+
		"listener %d 127.0.0.1\nprotocol websockets\n"+
		"listener %d 127.0.0.1\nprotocol websockets\n%srequire_certificate true\n",
		plain, tlsPort, tlsFiles, wsPort, wssPort, tlsFiles), plain)
	upAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(plain))
	mtls := TLSConfig{
		CAFile:     filepath.Join(dir, "ca.pem"),
		CertFile:   filepath.Join(dir, "client.pem"),
		KeyFile:    filepath.Join(dir, "client.key"),
		ServerName: "upstream.test",
	}
	for _, tc := range []struct {
		name string
		url  string
		tls  TLSConfig
	}{
		{"mqtts", fmt.Sprintf("mqtts://127.0.0.1:%d", tlsPort), mtls},
		{"ws", fmt.Sprintf("ws://127.0.0.1:%d/mqtt", wsPort), TLSConfig{}},
		{"wss", fmt.Sprintf("wss://127.0.0.1:%d", wssPort), mtls},
	} {
		for _, protocol := range []string{"5", "3.1.1"} {
			t.Run(tc.name+"/mqtt"+protocol, func(t *testing.T) {
				topic := "sites/gw1/myhome/" + tc.name + protocol
				o := newObserver(t, upAddr, topic, 1)
				q := openQueue(t, buffer.Config{})
				cfg := testConfig(tc.url)
				cfg.Upstream.Protocol = protocol
				cfg.Upstream.TLS = tc.tls
				cfg.Upstream.ClientID = "{gateway}-" + tc.name + protocol
				b := newBridge(t, cfg, q, nil, nil)
				startBridge(t, b)
				ingestConcurrently(t, b, 2, 50, 1, func(int) string { return "myhome/" + tc.name + protocol })
				checkDelivery(t, o, 100)
			})
		}
	}
	t.Run("mqtts without client certificate is refused", func(t *testing.T) {
		q := openQueue(t, buffer.Config{})
		cfg := testConfig(fmt.Sprintf("mqtts://127.0.0.1:%d", tlsPort))
		cfg.Upstream.TLS = TLSConfig{CAFile: mtls.CAFile, ServerName: "upstream.test"}
		b := newBridge(t, cfg, q, nil, nil)
		startBridge(t, b)
		waitFor(t, 20*time.Second, "failed connection attempts", func() bool { return b.Stats().ConnectFailures >= 2 })
		if s := b.Stats(); s.Connects != 0 {
			t.Errorf("connected %d times without a client certificate", s.Connects)
		}
	})
}
