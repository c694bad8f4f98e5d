package bridge

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/buffer"

	mqttpackets "github.com/eclipse/paho.mqtt.golang/packets"
)

func TestRefusedErrorWording(t *testing.T) {
	for _, c := range []struct {
		err  *RefusedError
		want string
	}{
		{&RefusedError{Packet: "CONNACK", Code: 0x87, ClientID: "gw"}, "upstream refused the login (0x87 not authorized): check bridge.upstream.username / password_file (and the upstream's ACL for this user)"},
		{&RefusedError{Packet: "CONNACK", Code: 0x86, ClientID: "gw"}, "upstream refused the login (0x86 bad user name or password): check bridge.upstream.username / password_file (and the upstream's ACL for this user)"},
		{&RefusedError{Packet: "CONNACK", Code: 0x84, ClientID: "gw"}, "upstream refused the login (0x84 unsupported protocol version): set bridge.upstream.protocol: 3.1.1"},
		{&RefusedError{Packet: "DISCONNECT", Code: 0x8E, ClientID: "gw-01"}, `upstream closed the connection (0x8e session taken over): another client connected with the same client id "gw-01": is gateway.id unique among your gateways?`},
		{&RefusedError{Packet: "DISCONNECT", Code: 0x98, Reason: "kicked by admin"}, `upstream closed the connection (0x98 administrative action) "kicked by admin"`},
	} {
		if got := c.err.Error(); got != c.want {
			t.Errorf("%#x:\n got %s\nwant %s", c.err.Code, got, c.want)
		}
	}
}

func TestRefusal3(t *testing.T) {
	err := fmt.Errorf("%w : %w", mqttpackets.ErrorRefusedNotAuthorised, fmt.Errorf("EOF"))
	r := refusal3(err, "gw")
	if r == nil || r.Code != 0x87 {
		t.Fatalf("refusal3 = %+v, want code 0x87", r)
	}
	if refusal3(fmt.Errorf("dial: refused"), "gw") != nil {
		t.Fatal("a dial error is not a refusal")
	}
}

// syncBuf is a log sink for a test.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// An MQTT 5 upstream that sends DISCONNECT 0x8E (session taken over) after
// accepting the connection: the log names the code and asks whether
// gateway.id is unique.
func TestServerDisconnectTakenOver(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				buf := make([]byte, 1024)
				if _, err := c.Read(buf); err != nil { // CONNECT
					return
				}
				// CONNACK (v5, no properties), then DISCONNECT 0x8E.
				_, _ = c.Write([]byte{0x20, 0x03, 0x00, 0x00, 0x00, 0xE0, 0x02, 0x8E, 0x00})
				_, _ = io.Copy(io.Discard, c)
			})
		}
	})
	var logs syncBuf
	cfg := testConfig("mqtt://" + ln.Addr().String())
	b, err := New(cfg, Options{Gateway: "gw1", Queue: openQueue(t, buffer.Config{}), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	startBridge(t, b)
	want := `msg="upstream closed the connection (0x8e session taken over): another client connected with the same client id \"gw1\": is gateway.id unique among your gateways?"`
	waitFor(t, 10*time.Second, "the take-over in the log", func() bool { return strings.Contains(logs.String(), want) })
	if n := strings.Count(logs.String(), "session taken over"); n != 1 {
		t.Errorf("logged %d times at warn, want once until a connection lasts:\n%s", n, logs.String())
	}
}
