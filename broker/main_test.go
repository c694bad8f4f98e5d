package broker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"go.uber.org/goleak"
	"golang.org/x/crypto/bcrypt"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testLogger writes broker logs to the test log only when -v is given.
func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() && os.Getenv("BROKER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// running is a broker served by Run in the background.
type running struct {
	*Broker
	cancel context.CancelFunc
	done   chan error
}

func (r *running) addr(i int) string { return r.Addrs()[i].String() }

// stop cancels Run and waits for it; it fails the test if Run failed.
func (r *running) stop(t testing.TB) {
	t.Helper()
	r.cancel()
	if err := <-r.done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// anonCfg is one anonymous TCP listener on a free loopback port.
func anonCfg() Config {
	return Config{
		Listeners: []ListenerConfig{{Type: ListenerTCP, Address: "127.0.0.1:0"}},
		Auth:      AuthConfig{Anonymous: true},
	}
}

// start runs a broker on dataDir until the test ends (or stop is called).
func start(t testing.TB, cfg Config, dataDir string, ingress func(*Message) error) *running {
	t.Helper()
	b, err := New(cfg, Options{DataDir: dataDir, Logger: testLogger(t), Ingress: syncIngress(ingress)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Broker: b, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- b.Run(ctx) }()
	select {
	case <-b.Ready():
	case err := <-r.done:
		cancel()
		t.Fatalf("Run returned before Ready: %v", err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cancel()
			<-r.done
		}
	})
	return &running{Broker: b, cancel: func() { stopped = true; cancel() }, done: r.done}
}

// hashFor returns a bcrypt hash (minimum cost, for speed) of password.
func hashFor(t testing.TB, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// dialPaho connects an MQTT 5 paho.golang client; onMsg (may be nil)
// receives every PUBLISH.
func dialPaho(t testing.TB, addr string, cp *paho.Connect, onMsg func(*paho.Publish)) (*paho.Client, *paho.Connack, error) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	cfg := paho.ClientConfig{Conn: conn, PacketTimeout: time.Minute}
	if onMsg != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { onMsg(pr.Packet); return true, nil },
		}
	}
	c := paho.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if cp.KeepAlive == 0 {
		cp.KeepAlive = 30
	}
	ca, err := c.Connect(ctx, cp)
	if err != nil {
		_ = conn.Close()
		return nil, ca, err
	}
	t.Cleanup(func() {
		_ = c.Disconnect(&paho.Disconnect{})
		<-c.Done()
	})
	return c, ca, nil
}

// needPeer fails the test when an external program is missing.
func needPeer(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is required for this test (apt-get install mosquitto-clients python3-paho-mqtt): %v", name, err)
	}
	return p
}

// waitFor polls cond until it is true or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var errTest = errors.New("test")

func durationOf(d time.Duration) *time.Duration { return &d }
