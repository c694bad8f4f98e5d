package broker

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testPKI writes a throwaway CA, a server certificate for 127.0.0.1 and a
// client certificate into dir and returns their paths.
type testPKI struct{ ca, serverCert, serverKey, clientCert, clientKey string }

func newTestPKI(t *testing.T, dir string) testPKI {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fieldgate test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(key)
		return write(name+".crt", "CERTIFICATE", der), write(name+".key", "EC PRIVATE KEY", kder)
	}
	p := testPKI{ca: write("ca.crt", "CERTIFICATE", caDER)}
	p.serverCert, p.serverKey = leaf("server", 2, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = leaf("client", 3, x509.ExtKeyUsageClientAuth)
	return p
}

func TestTLSClientCertificates(t *testing.T) {
	pki := newTestPKI(t, t.TempDir())
	cfg := anonCfg()
	cfg.Listeners = []ListenerConfig{
		{Type: ListenerTLS, Address: "127.0.0.1:0", TLS: &TLSConfig{CertFile: pki.serverCert, KeyFile: pki.serverKey, ClientCAFile: pki.ca}},
		{Type: ListenerTLS, Address: "127.0.0.1:0", TLS: &TLSConfig{CertFile: pki.serverCert, KeyFile: pki.serverKey}},
	}
	r := start(t, cfg, t.TempDir(), nil)
	got := make(chan Message, 10)
	unsub, err := r.Subscribe("tls/#", func(m Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer unsub()

	pub := func(listener int, topic string, extra ...string) (string, error) {
		h, p := hostPort(t, r.addr(listener))
		args := append([]string{"-h", h, "-p", p, "--cafile", pki.ca, "-q", "1", "-t", topic, "-m", "x"}, extra...)
		return run(t, "mosquitto_pub", args...)
	}
	if out, err := pub(0, "tls/with-cert", "--cert", pki.clientCert, "--key", pki.clientKey); err != nil {
		t.Fatalf("with client certificate: %v: %s", err, out)
	}
	if m := <-got; m.Topic != "tls/with-cert" {
		t.Fatalf("got %+v", m)
	}
	if out, err := pub(0, "tls/without-cert"); err == nil {
		t.Fatalf("listener requiring client certificates accepted a client without one: %s", out)
	}
	if out, err := pub(1, "tls/plain-tls", "-V", "mqttv311"); err != nil {
		t.Fatalf("TLS without client certificates: %v: %s", err, out)
	}
	if m := <-got; m.Topic != "tls/plain-tls" {
		t.Fatalf("got %+v (the certificate-less publish must not arrive)", m)
	}
}

func TestWebsocketWithPythonPaho(t *testing.T) {
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		t.Fatalf("%s is required (apt-get install python3-paho-mqtt): %v", py, err)
	}
	cfg := anonCfg()
	cfg.Listeners = []ListenerConfig{{Type: ListenerWebsocket, Address: "127.0.0.1:0"}}
	r := start(t, cfg, t.TempDir(), nil)
	if err := r.Publish(context.Background(), Message{Topic: "ws/retained", Payload: []byte("r"), Retain: true}); err != nil {
		t.Fatal(err)
	}
	got := make(chan Message, 10)
	unsub, err := r.Subscribe("ws/in", func(m Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer unsub()
	h, p := hostPort(t, r.addr(0))
	script := `
import sys, threading
import paho.mqtt.client as mqtt
got = threading.Event()
c = mqtt.Client(client_id="ws-py", transport="websockets", protocol=mqtt.MQTTv5)
c.ws_set_options(path="/mqtt")
def on_message(c, u, m):
    print(m.topic, m.payload.decode()); got.set()
c.on_message = on_message
c.connect(sys.argv[1], int(sys.argv[2]))
c.loop_start()
c.subscribe("ws/retained", qos=1)
if not got.wait(30): sys.exit("no retained message over websocket")
c.publish("ws/in", "hello-ws", qos=1).wait_for_publish(30)
c.disconnect(); c.loop_stop()
`
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, py, "-c", script, h, p).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ws/retained r" {
		t.Fatalf("python over websocket: err=%v out=%q", err, out)
	}
	if m := <-got; string(m.Payload) != "hello-ws" || m.Origin != "ws-py" {
		t.Fatalf("got %+v", m)
	}
}
