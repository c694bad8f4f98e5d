// Package bridge is fieldgate's store-and-forward link to one upstream MQTT
// broker (MQTT 5 through paho.golang, MQTT 3.1.1 through paho.mqtt.golang;
// over mqtt://, mqtts:// with optional client certificates, ws:// and wss://).
//
// # Lifecycle
//
// New compiles the configuration and starts nothing. Run connects, drains
// the buffer and serves the subscribe routes until its context is done,
// then returns after every goroutine it started has ended. Ingest may be
// called concurrently at any time, also while Run is not running (messages
// are then only buffered). The caller opens and closes the buffer.
//
// # Forward path and guarantees
//
// The local broker calls Ingest for every local publish before it
// acknowledges the publisher. A QoS 1/2 message matching a forward route is
// encoded (topic already mapped to prefix+topic, QoS lowered to the route's
// qos, MQTT 5 properties, accept time) and appended to the buffer, which
// returns once the record is fsync'd (G1). A message matching several
// routes is stored once per route, in route order. Under the reject policy
// a full buffer makes Ingest return an error wrapping buffer.ErrFull.
// QoS 0 messages are not buffered unless the route says buffer_qos0: they
// are handed to the current connection best-effort and counted as dropped
// when there is none.
//
// # Ordering: one FIFO cursor
//
// The drain is a single cursor through the buffer in sequence (= acceptance)
// order. Live messages are appended behind any backlog, so while a backlog
// drains new messages wait their turn: the upstream sees every route's
// messages — in fact all buffered messages — in the order the gateway
// accepted them (G3). Up to `inflight` messages (default 1024, never more
// than the upstream's Receive Maximum, at most 4 MiB of topics and
// payloads) are published before their
// acknowledgements arrive; the packets leave in cursor order over one
// connection, so the upstream receives them in order. A record is acked in
// the buffer only after its PUBACK (QoS 1) or PUBCOMP (QoS 2). replay_rate
// paces the cursor (messages/s and bytes/s, one second of burst) so that a
// backlog does not flood a metered link; it applies to everything the
// cursor sends, backlog and live alike, because they are one stream.
//
// When a connection ends with messages unacknowledged the next connection
// resends from the oldest unacknowledged record, in order: the upstream may
// see duplicates, never a reordering (a message sent again is always
// followed by the ones after it again). Stall detection: when messages are
// in flight and nothing is acknowledged for stall_timeout (default 30s)
// the connection is dropped and re-established the same way.
//
// # QoS 2 exactly-once (G5): what is and is not guaranteed
//
// MQTT 5: one client session (paho's session state) is shared by all the
// connections of a Bridge, which ask the upstream to resume it
// (clean_start false, session_expiry default 1h). With Options.DataDir set
// the session is persisted in <DataDir>/session: every QoS 2 PUBLISH, and
// the PUBREL that replaces it, is written and fsync'd together with the
// buffer sequence number of its record before it is sent; QoS 2 messages
// received from upstream keep their PUBREC state in paho's file store.
// When the upstream resumes the session (CONNACK session present), paho
// retransmits the unfinished PUBLISH (DUP) and PUBREL packets with their
// original packet identifiers and the drain does not resend those
// records, so a QoS 2 message is delivered exactly once:
//
//   - across any number of reconnects (also stall-detection reconnects);
//   - across a restart (graceful, crash, kill -9) when, at startup, every
//     unacknowledged record up to the newest one in the session is either
//     in the session or a QoS 2 record that already left it (completed;
//     its buffer ack was lost in the crash — it is acked, not resent).
//     Typical case: the upstream was unreachable or slow when the process
//     died.
//
// Otherwise the bridge falls back to at least once, never to loss or
// reordering: if an unacknowledged QoS 0/1 record older than the session's
// newest one exists after a restart (it may not have reached the upstream,
// and sending it after the session's retransmissions would reorder), if the
// upstream did not keep the session (expired, broker restart without
// persistence), or after a message refused for retry (reason 0x97/0x91;
// persisted as a marker), the next connection starts a clean session and
// resends from the oldest unacknowledged record. Without DataDir the
// session lives in memory: exactly once across reconnects only, and the
// first connection of a process starts clean (reusing packet identifiers
// the upstream may still hold would make it discard new messages). A
// PUBLISH replaced by its PUBREL is renamed into place and the directory
// synced, so a power loss cannot bring the PUBLISH back; the removal of a
// completed exchange's file does not sync the directory (one sync per
// message is enough), so a power loss (not kill -9) may resurrect it and
// that message may then be duplicated. QoS 1 is always at least once.
//
// MQTT 3.1.1: every connection uses a clean session; messages in flight
// when a connection drops are resent from the buffer (at least once, for
// QoS 2 too). Publish hands packets to paho.mqtt.golang's writer with a 3s
// limit: a publish that races with a connection loss waits at most that.
//
// # Subscribe routes and loops
//
// Messages arriving from the upstream on a subscribe route's filter are
// published locally through LocalPublisher with Origin set to
// bridge.Origin, their topic without strip_prefix and with prefix. Ingest
// ignores messages with that Origin, so nothing received from upstream is
// ever forwarded back up (MQTT 5 subscriptions also set No Local). The
// subscriptions are made again on every connection. While an MQTT 5
// session is resumed (see above) the upstream also delivers the QoS 1/2
// messages it queued for those subscriptions while the gateway was away,
// up to session_expiry; QoS 2 messages from upstream keep their PUBREC
// state in the persisted session, so a resumed session does not publish
// them locally twice.
//
// # Status
//
// The connection carries a retained will "offline" on the status topic
// (default sites/{gateway}/status); after connecting the bridge publishes a
// retained "online", and on a graceful stop a retained "offline". Every
// status_interval (default 1m) it publishes a JSON document (QoS 0, not
// retained) on <status topic>/bridge:
//
//	{"gateway":"gw-01","time":"…","connected":true,"backlog_messages":0,
//	 "backlog_bytes":0,"oldest_age_seconds":0,"inflight":0,"reconnects":0,
//	 "forwarded":123,"forward_rate":4.2,"dropped":{"corrupt":0,…}}
//
// # Buffer records
//
// The bridge owns the record encoding (see encodeRecord): a version byte
// then the message fields. A record that fails to decode is logged, acked
// and counted in Stats().Dropped.Corrupt; it never stops the drain.
package bridge
