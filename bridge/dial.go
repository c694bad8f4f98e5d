package bridge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// DialFunc opens the transport-level connection (TCP) to addr; TLS and
// websocket framing are layered on top by the bridge. Tests use it to put
// a proxy they control between the bridge and the upstream.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// endpoint is the compiled upstream address.
type endpoint struct {
	url    *url.URL
	secure bool
	ws     bool
	addr   string // host:port
	tls    *tls.Config
}

func compileEndpoint(u UpstreamConfig) (*endpoint, error) {
	pu, err := url.Parse(u.URL)
	if err != nil {
		return nil, fmt.Errorf("upstream url: %w", err)
	}
	e := &endpoint{url: pu}
	port := ""
	switch pu.Scheme {
	case "mqtt", "tcp":
		port = "1883"
	case "mqtts", "ssl", "tls":
		port, e.secure = "8883", true
	case "ws":
		port, e.ws = "80", true
	case "wss":
		port, e.ws, e.secure = "443", true, true
	default:
		return nil, fmt.Errorf("upstream url: unsupported scheme %q", pu.Scheme)
	}
	if p := pu.Port(); p != "" {
		port = p
	}
	e.addr = net.JoinHostPort(pu.Hostname(), port)
	if e.ws && (pu.Path == "" || pu.Path == "/") {
		e.url = &url.URL{Scheme: pu.Scheme, Host: pu.Host, Path: "/mqtt", RawQuery: pu.RawQuery}
	}
	if e.secure {
		tc := &tls.Config{
			ServerName:         u.TLS.ServerName,
			InsecureSkipVerify: u.TLS.InsecureSkipVerify, //nolint:gosec // operator's explicit choice
			MinVersion:         tls.VersionTLS12,
		}
		if tc.ServerName == "" {
			tc.ServerName = pu.Hostname()
		}
		if u.TLS.CAFile != "" {
			pem, err := os.ReadFile(u.TLS.CAFile)
			if err != nil {
				return nil, fmt.Errorf("upstream tls ca_file: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("upstream tls ca_file %s: no PEM certificates", u.TLS.CAFile)
			}
		}
		if u.TLS.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(u.TLS.CertFile, u.TLS.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("upstream tls client certificate: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		e.tls = tc
	}
	return e, nil
}

// dial opens the connection up to (not including) the MQTT CONNECT.
func (e *endpoint) dial(ctx context.Context, dial DialFunc) (net.Conn, error) {
	if e.ws {
		d := websocket.Dialer{
			NetDialContext:   dial,
			TLSClientConfig:  e.tls,
			Subprotocols:     []string{"mqtt"},
			HandshakeTimeout: 0, // bounded by ctx
		}
		wc, resp, err := d.DialContext(ctx, e.url.String(), nil)
		if resp != nil && resp.Body != nil {
			_ = resp.Body.Close()
		}
		if err != nil {
			return nil, fmt.Errorf("websocket %s: %w", e.url.Redacted(), err)
		}
		return &wsConn{Conn: wc}, nil
	}
	c, err := dial(ctx, "tcp", e.addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", e.addr, err)
	}
	if e.tls == nil {
		return c, nil
	}
	tc := tls.Client(c, e.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("tls handshake %s: %w", e.addr, err)
	}
	return tc, nil
}

// wsConn adapts a websocket connection to net.Conn: each Write is one
// binary message, Read streams across message boundaries. Safe for one
// concurrent reader and any number of writers.
type wsConn struct {
	*websocket.Conn
	wmu sync.Mutex
	r   io.Reader
}

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			t, r, err := c.NextReader()
			if err != nil {
				return 0, err
			}
			if t != websocket.BinaryMessage {
				continue
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// SetWriteDeadline is safe to call while a Write is in progress: the
// deadline is set on the underlying connection at once (bounding the
// write in progress) and on the websocket under the write lock (gorilla
// re-applies it to every frame).
func (c *wsConn) SetWriteDeadline(t time.Time) error {
	if err := c.UnderlyingConn().SetWriteDeadline(t); err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}

func (c *wsConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}
