package broker

import (
	"net"
	"strconv"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Connections that have not completed CONNECT cost memory and a file
// descriptor and are outside limits.max_clients, which counts clients.
// They are bounded three ways: each must complete CONNECT within
// limits.connect_timeout (a read deadline, replaced by the keepalive once
// the CONNECT is read); at most limits.max_pending_connections of them
// exist at once; and one remote address may open limits.connect_rate
// connections per second (bursts of twice that) — except 127.0.0.1 and
// ::1, the gateway's own processes (scripts running mosquitto_pub in a loop).
// A connection beyond a limit is closed at once, before anything is read
// from it, and logged (rate-limited per address).

// admit counts c as pending, or closes it when a limit is reached. release
// ends the pending state (idempotent through connected).
func (b *Broker) admit(c net.Conn) (release func(), ok bool) {
	addr := c.RemoteAddr().String()
	host := hostOf(addr)
	if allowed, _ := b.connRate.allow(host); !allowed && host != "127.0.0.1" && host != "::1" {
		_ = c.Close()
		b.refusal("", addr, "connection refused", "addr", addr, "", "over limits.connect_rate: "+strconv.Itoa(b.cfg.Limits.ConnectRate)+" new connections per second from this address")
		return nil, false
	}
	if n := b.pendingCount.Add(1); n > int64(b.cfg.Limits.MaxPendingConnections) {
		b.pendingCount.Add(-1)
		_ = c.Close()
		b.refusal("", addr, "connection refused", "addr", addr, "", "over limits.max_pending_connections: "+strconv.Itoa(b.cfg.Limits.MaxPendingConnections)+" connections have not completed CONNECT")
		return nil, false
	}
	return func() { b.pendingCount.Add(-1) }, true
}

// connected ends the pending state of connection c, once.
func (b *Broker) connected(c net.Conn) {
	if v, ok := b.pending.LoadAndDelete(c); ok {
		v.(func())()
	}
}

// OnSessionEstablish (guard hook): the CONNECT is complete and accepted.
func (g *guard) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Conn != nil {
		g.b.connected(cl.Net.Conn)
	}
}
