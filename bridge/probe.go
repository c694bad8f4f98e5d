package bridge

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// ProbeSuffix is appended to the client id of a Probe connection, so that
// a probe never takes over the session of a running gateway.
const ProbeSuffix = "-doctor"

// Probe connects to the upstream exactly as the bridge does — the same URL,
// TLS and websocket setup, protocol version, username and password_file —
// and disconnects at once. It sends an MQTT CONNECT with the bridge's
// client id (a template, {gateway}) plus ProbeSuffix, a clean start and no
// will, so nothing of the gateway's upstream session or status topic is
// touched. It returns the client id used; an error that is a
// *RefusedError is the upstream's refusal (its message says what to
// check). u must have its defaults applied. Probe is bounded by
// u.ConnectTimeout and ctx.
func Probe(ctx context.Context, u UpstreamConfig, gateway string) (clientID string, err error) {
	ep, err := compileEndpoint(u)
	if err != nil {
		return "", err
	}
	p := connectParams{
		clientID:   expand(u.ClientID, gateway) + ProbeSuffix,
		username:   u.Username,
		keepAlive:  uint16(durationOf(u.KeepAlive, defaultKeepAlive) / time.Second),
		cleanStart: true,
		onMessage:  func(Message) {},
		onError:    func(error) {},
	}
	if u.PasswordFile != "" {
		pw, err := os.ReadFile(u.PasswordFile)
		if err != nil {
			return p.clientID, fmt.Errorf("password_file: %w", err)
		}
		p.password = []byte(strings.TrimSpace(string(pw)))
	}
	cctx, cancel := context.WithTimeout(ctx, u.ConnectTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := ep.dial(cctx, d.DialContext)
	if err != nil {
		return p.clientID, err
	}
	var l link
	if u.Protocol == "5" {
		s, serr := newSession5("")
		if serr != nil {
			conn.Close()
			return p.clientID, serr
		}
		l, err = connect5(cctx, conn, s, p)
	} else {
		l, err = connect3(cctx, conn, p, u.ConnectTimeout)
	}
	if err != nil {
		return p.clientID, err
	}
	l.close(true)
	return p.clientID, nil
}
