package gateway

import (
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fieldgate/fieldgate/devices/serial"
)

// metrics exposes the components' Stats snapshots as Prometheus metrics,
// read at scrape time. Counters are monotonic within one process.
type metrics struct{ g *Gateway }

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("fieldgate_"+name, help, labels, nil)
}

var (
	mUp              = desc("ready", "1 when listeners are bound and the store is open.")
	mBuild           = desc("build_info", "Always 1; the labels identify the running binary.", "version", "commit", "date", "goversion")
	mClients         = desc("broker_clients", "Network clients connected now.")
	mClientsMax      = desc("broker_clients_maximum", "Most network clients connected at once.")
	mSessions        = desc("broker_sessions", "Sessions known (connected and persistent).")
	mMsgIn           = desc("broker_messages_received_total", "PUBLISH packets received (network and in-process).")
	mMsgOut          = desc("broker_messages_sent_total", "PUBLISH packets sent to clients.")
	mMsgDropped      = desc("broker_messages_dropped_total", "Messages a client's queue or inflight limit refused.")
	mBytesIn         = desc("broker_bytes_received_total", "Bytes received from clients.")
	mBytesOut        = desc("broker_bytes_sent_total", "Bytes sent to clients.")
	mRetained        = desc("broker_retained_messages", "Retained messages held.")
	mInflight        = desc("broker_inflight_messages", "QoS 1/2 messages in flight or queued for clients.")
	mSubs            = desc("broker_subscriptions", "Network client subscriptions.")
	mIngressRejected = desc("broker_ingress_rejected_total", "Publishes refused because they could not be stored.")
	mAuthFailures    = desc("broker_auth_failures_total", "CONNECTs refused for bad credentials.")
	mACLDenied       = desc("broker_acl_denied_total", "Publishes, subscriptions or deliveries refused by the ACL.")
	mDeliveryWaits   = desc("broker_delivery_waits_total", "Publishes that waited for a subscriber's full queue.")
	mDeliveryTimeout = desc("broker_delivery_wait_timeouts_total", "Waits given up after limits.delivery_wait: limits.when_queue_full applied to that subscriber.")
	mSlowDisconnects = desc("broker_slow_disconnects_total", "Subscribers disconnected by limits.when_queue_full: disconnect.")

	mBufMsgs     = desc("buffer_messages", "Messages stored and not yet acknowledged upstream (backlog).")
	mBufBytes    = desc("buffer_bytes", "Backlog bytes counted against bridge.buffer.max_bytes.")
	mBufMax      = desc("buffer_max_bytes", "The buffer quota.")
	mBufOldest   = desc("buffer_oldest_age_seconds", "Age of the oldest buffered message.")
	mBufAppended = desc("buffer_appended_total", "Messages made durable.")
	mBufAcked    = desc("buffer_acked_total", "Messages removed after the upstream acknowledged them.")
	mBufRejected = desc("buffer_rejected_total", "Messages refused because the buffer was full (when_full: reject).")
	mBufDropped  = desc("buffer_dropped_total", "Messages dropped by the buffer, by reason.", "reason")
	mBufSyncs    = desc("buffer_fsyncs_total", "fsyncs made for appends (group commits).")
	mBufDisk     = desc("buffer_disk_bytes", "Size of the buffer's files on disk.")

	mUpConnected  = desc("upstream_connected", "1 while the upstream connection is up.")
	mUpReconnects = desc("upstream_reconnects_total", "Upstream connections made after the first.")
	mUpFailures   = desc("upstream_connect_failures_total", "Failed upstream connection attempts.")
	mUpStalls     = desc("upstream_stalls_total", "Upstream connections dropped because nothing was acknowledged in time.")
	mBrInflight   = desc("bridge_inflight_messages", "Messages sent upstream and not yet acknowledged.")
	mBrForwarded  = desc("bridge_forwarded_total", "Messages acknowledged by the upstream.")
	mBrResent     = desc("bridge_resent_total", "Messages sent again after a reconnect (possible duplicates upstream).")
	mBrReceived   = desc("bridge_received_total", "Messages from subscribe routes published locally.")
	mBrRate       = desc("bridge_forward_rate", "Messages forwarded per second over the last 5 seconds.")
	mBrDropped    = desc("bridge_dropped_total", "Messages the bridge dropped, by reason.", "reason")

	mDevOnline     = desc("device_online", "1 while the device answers.", "device", "driver")
	mDevPolls      = desc("device_polls_total", "Polls of the device.", "device", "driver")
	mDevPollErrors = desc("device_poll_errors_total", "Polls that failed as a whole.", "device", "driver")
	mDevReadErrors = desc("device_read_errors_total", "Points that could not be read.", "device", "driver")
	mDevPublished  = desc("device_published_total", "Messages published for the device.", "device", "driver")
	mDevWrites     = desc("device_writes_total", "Write requests received.", "device", "driver")
	mDevWriteErrs  = desc("device_write_errors_total", "Write requests refused or failed.", "device", "driver")
	mDevImplaus    = desc("device_implausible_readings_total", "Readings outside their point's valid range (published with quality bad).", "device", "driver")
	mDevReconnects = desc("device_reconnects_total", "Reopen attempts after a failure.", "device", "driver")
	mSerialLines   = desc("serial_lines_total", "Lines read from serial sensors, by result (parsed or the reason they were skipped).", "device", "result")
	mDevLastSample = desc("device_last_sample_timestamp_seconds", "Sample time of the last published value.", "device", "driver")
)

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(m, ch)
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	g := m.g
	g.mu.Lock()
	ready, b, q, br, devs := g.ready, g.broker, g.queue, g.bridge, g.devs
	g.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(mBuild, prometheus.GaugeValue, 1, g.build.Version, g.build.Commit, g.build.Date, runtime.Version())
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(mUp, boolf(ready))

	if b != nil {
		s := b.Stats()
		gauge(mClients, float64(s.ClientsConnected))
		gauge(mClientsMax, float64(s.ClientsMaximum))
		gauge(mSessions, float64(s.Sessions))
		counter(mMsgIn, float64(s.MessagesReceived))
		counter(mMsgOut, float64(s.MessagesSent))
		counter(mMsgDropped, float64(s.MessagesDropped))
		counter(mBytesIn, float64(s.BytesReceived))
		counter(mBytesOut, float64(s.BytesSent))
		gauge(mRetained, float64(s.Retained))
		gauge(mInflight, float64(s.Inflight))
		gauge(mSubs, float64(s.Subscriptions))
		counter(mIngressRejected, float64(s.IngressRejected))
		counter(mAuthFailures, float64(s.AuthFailures))
		counter(mACLDenied, float64(s.ACLDenied))
		counter(mDeliveryWaits, float64(s.DeliveryWaits))
		counter(mDeliveryTimeout, float64(s.DeliveryWaitTimeout))
		counter(mSlowDisconnects, float64(s.SlowDisconnects))
	}
	if q != nil {
		s := q.Stats()
		gauge(mBufMsgs, float64(s.Messages))
		gauge(mBufBytes, float64(s.Bytes))
		gauge(mBufMax, float64(s.MaxBytes))
		age := 0.0
		if !s.OldestTime.IsZero() {
			age = time.Since(s.OldestTime).Seconds()
		}
		gauge(mBufOldest, age)
		counter(mBufAppended, float64(s.Appended))
		counter(mBufAcked, float64(s.Acked))
		counter(mBufRejected, float64(s.Rejected))
		counter(mBufDropped, float64(s.Dropped.Quota), "quota")
		counter(mBufDropped, float64(s.Dropped.Expired), "expired")
		counter(mBufDropped, float64(s.Dropped.Corrupt), "corrupt")
		counter(mBufSyncs, float64(s.Syncs))
		gauge(mBufDisk, float64(s.DiskBytes))
	}
	if br != nil {
		s := br.Stats()
		gauge(mUpConnected, boolf(s.Connected))
		counter(mUpReconnects, float64(s.Reconnects))
		counter(mUpFailures, float64(s.ConnectFailures))
		counter(mUpStalls, float64(s.Stalls))
		gauge(mBrInflight, float64(s.Inflight))
		counter(mBrForwarded, float64(s.Forwarded))
		counter(mBrResent, float64(s.Resent))
		counter(mBrReceived, float64(s.Received))
		gauge(mBrRate, s.ForwardRate)
		d := s.Dropped
		for reason, v := range map[string]uint64{
			"corrupt": d.Corrupt, "expired": d.Expired, "rejected_upstream": d.Rejected,
			"qos0_offline": d.QoS0Offline, "qos0_overflow": d.QoS0Overflow,
			"local_publish": d.LocalPublish, "invalid_topic": d.Invalid,
		} {
			counter(mBrDropped, float64(v), reason)
		}
	}
	m.collectSerial(ch)
	if devs != nil {
		for _, d := range devs.Stats().Devices {
			l := []string{d.Name, d.Driver}
			gauge(mDevOnline, boolf(d.Online), l...)
			counter(mDevPolls, float64(d.Polls), l...)
			counter(mDevPollErrors, float64(d.PollErrors), l...)
			counter(mDevReadErrors, float64(d.ReadErrors), l...)
			counter(mDevPublished, float64(d.Published), l...)
			counter(mDevWrites, float64(d.Writes), l...)
			counter(mDevWriteErrs, float64(d.WriteErrors), l...)
			counter(mDevImplaus, float64(d.Implausible), l...)
			counter(mDevReconnects, float64(d.Reconnects), l...)
			if !d.LastSample.IsZero() {
				gauge(mDevLastSample, float64(d.LastSample.UnixMilli())/1000, l...)
			}
		}
	}
}

// lineStatser is the serial driver's per-device line accounting.
type lineStatser interface {
	Stats() map[string]serial.LineStats
}

func (m *metrics) collectSerial(ch chan<- prometheus.Metric) {
	d, ok := m.g.drivers["serial"].(lineStatser)
	if !ok {
		return
	}
	for dev, s := range d.Stats() {
		for result, v := range map[string]uint64{
			"parsed": s.Parsed, "empty": s.Empty, "no_match": s.NoMatch, "garbage": s.Garbage,
			"invalid_utf8": s.InvalidUTF8, "too_long": s.TooLong, "partial": s.Partial, "timeout": s.Timeouts,
		} {
			ch <- prometheus.MustNewConstMetric(mSerialLines, prometheus.CounterValue, float64(v), dev, result)
		}
	}
}

func boolf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
