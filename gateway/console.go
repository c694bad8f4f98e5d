package gateway

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/fieldgate/fieldgate/broker"
	"github.com/fieldgate/fieldgate/console"
	"github.com/fieldgate/fieldgate/devices"
)

// logRingSize is how many recent log lines the console's Log page keeps.
const logRingSize = 1000

// consoleWiring is the gateway's side of the web console: the console
// itself, its own listener when console.address is set, the log ring, the
// point subscriptions that feed live values, and the last reload's result.
type consoleWiring struct {
	con     *console.Console
	ln      net.Listener // nil when served on the ops server
	ring    *console.LogRing
	started time.Time

	points atomic.Pointer[map[string]pointRef] // point topic → point, for live values
	ingest rateMeter                           // messages entering the buffer per second

	mu         sync.Mutex
	lastReload *console.ReloadResult
	yamlOf     *Config // the configuration yamlText shows
	yamlText   string
}

// ringOf returns the log ring behind a logger built by NewLogger, or nil.
func ringOf(log *slog.Logger) *console.LogRing {
	if r, ok := log.Handler().(interface{ Ring() *console.LogRing }); ok {
		return r.Ring()
	}
	return nil
}

// newConsole builds the console when it is enabled and has somewhere to be
// served: its own address, or the ops server. It binds its own listener
// here, so that a busy port fails the start.
func (g *Gateway) newConsole(cfg *Config) error {
	cc := cfg.Console
	addr := cc.Address
	if cc.Enabled == nil || !*cc.Enabled || addr == "" && cfg.Gateway.HTTP.Address == "off" {
		return nil
	}
	if addr == "" {
		addr = cfg.Gateway.HTTP.Address
	}
	g.cw.started = time.Now()
	src := consoleSource{g}
	con, err := console.New(cc, console.Options{
		Status:  src,
		Devices: src,
		Clients: src,
		Writer:  src,
		Config:  src,
		Log:     g.cw.ring,
		Addr:    addr,
		Logger:  g.log,
	})
	if err != nil {
		return fmt.Errorf("console: %w", err)
	}
	if err := con.CheckTLS(); err != nil {
		return err
	}
	if cc.Address != "" {
		ln, err := net.Listen("tcp", cc.Address)
		if err != nil {
			return fmt.Errorf("console.address: %w", err)
		}
		g.cw.ln = ln
	}
	if con.NeedsLogin() && len(cc.Users) == 0 {
		g.log.Warn("the console is reachable from the network and has no users: every page refuses access until console.users is set", "address", addr)
	}
	g.cw.con = con
	return nil
}

// ConsoleAddr returns the console's own listener address, "" when it is
// served on the ops endpoint or disabled.
func (g *Gateway) ConsoleAddr() string {
	if g.cw.ln == nil {
		return ""
	}
	return g.cw.ln.Addr().String()
}

// pointRef names a point by device and point name.
type pointRef struct{ device, point string }

// watchPoints points the console's live values at the points of set: the
// devices' publisher (see observed) looks each published topic up here.
func (g *Gateway) watchPoints(set *devices.Set) {
	if g.cw.con == nil {
		return
	}
	m := map[string]pointRef{}
	for _, d := range set.Devices() {
		for _, p := range d.Points {
			m[set.PointTopic(p)] = pointRef{d.Name(), p.Name()}
		}
	}
	g.cw.points.Store(&m)
}

// observedPublisher hands every reading the devices publish, once the
// broker has taken it, to the console. The console only parses the small
// payload and puts it in each open viewer's bounded buffer (newest value per
// point), so an open console never holds up a poller, and the broker does
// no extra delivery for it.
type observedPublisher struct {
	next devices.Publisher
	cw   *consoleWiring
}

func (p observedPublisher) Publish(ctx context.Context, m devices.Message) error {
	err := p.next.Publish(ctx, m)
	if err == nil && p.cw.con != nil {
		if pts := p.cw.points.Load(); pts != nil {
			if ref, ok := (*pts)[m.Topic]; ok {
				p.cw.con.Observe(ref.device, ref.point, m.Payload)
			}
		}
	}
	return err
}

// noteReload records a reload's outcome for the console's Config page.
func (g *Gateway) noteReload(err error, notApplied []string) {
	r := &console.ReloadResult{Time: time.Now(), OK: err == nil, NotApplied: notApplied}
	if err != nil {
		r.Error = err.Error()
	}
	g.cw.mu.Lock()
	g.cw.lastReload = r
	g.cw.mu.Unlock()
}

// consoleSource answers the console's questions from the running gateway.
type consoleSource struct{ g *Gateway }

func (s consoleSource) Status() console.Status {
	g := s.g
	g.mu.Lock()
	cfg, b, q, br, devs := g.cfg, g.broker, g.queue, g.bridge, g.devs
	g.mu.Unlock()
	now := time.Now()
	st := console.Status{
		Gateway:     cfg.Gateway.ID,
		Version:     cmp.Or(g.versionOr(), "dev"),
		Started:     g.cw.started,
		UptimeSec:   now.Sub(g.cw.started).Seconds(),
		ClockSynced: !g.clock.known.Load() || g.clock.synced.Load(),
		Drops:       map[string]uint64{},
		Disk:        console.DiskStatus{DataDir: cfg.Gateway.DataDir},
	}
	if devs != nil {
		ds := devs.Stats()
		st.DevicesTotal, st.DevicesOnline = len(ds.Devices), ds.Online
		if ds.WritesDropped > 0 {
			st.Drops["device_writes_queue_full"] = ds.WritesDropped
		}
	}
	if b != nil {
		bs := b.Stats()
		st.Broker = console.BrokerStatus{Clients: bs.ClientsConnected, Subscriptions: bs.Subscriptions, Retained: bs.Retained,
			Inflight: bs.Inflight, MessagesReceived: bs.MessagesReceived, MessagesSent: bs.MessagesSent}
		if bs.MessagesDropped > 0 {
			st.Drops["broker_client_queue_full"] = uint64(bs.MessagesDropped)
		}
		if bs.IngressRejected > 0 {
			st.Drops["broker_ingress_rejected"] = uint64(bs.IngressRejected)
		}
	}
	if br != nil && q != nil {
		bs := br.Stats()
		qs := q.Stats()
		u := console.UpstreamStatus{URL: redactURL(cfg.Bridge.Upstream.URL), State: bs.State, Connected: bs.Connected,
			LastError: bs.LastError, LastErrorTime: bs.LastErrorTime, Reconnects: bs.Reconnects, Forwarded: bs.Forwarded}
		st.Upstream = &u
		bl := console.BacklogStatus{Messages: qs.Messages, Bytes: qs.Bytes, MaxBytes: qs.MaxBytes, DrainRate: bs.ForwardRate,
			IngestRate: g.cw.ingest.update(now, bs.Ingested), DrainETASec: -1}
		if !qs.OldestTime.IsZero() {
			bl.OldestAgeSec = max(now.Sub(qs.OldestTime).Seconds(), 0)
		}
		// The backlog shrinks by what is forwarded minus what comes in.
		if net := bs.ForwardRate - bl.IngestRate; bs.Connected && net > 0 {
			bl.DrainETASec = float64(qs.Messages) / net
		}
		st.Backlog = &bl
		for reason, v := range map[string]uint64{
			"buffer_quota": qs.Dropped.Quota, "buffer_expired": qs.Dropped.Expired, "buffer_corrupt": qs.Dropped.Corrupt,
			"buffer_full_rejected": qs.Rejected,
			"upstream_rejected":    bs.Dropped.Rejected, "message_expired": bs.Dropped.Expired, "undecodable": bs.Dropped.Corrupt,
			"qos0_offline": bs.Dropped.QoS0Offline, "qos0_overflow": bs.Dropped.QoS0Overflow,
			"local_publish_refused": bs.Dropped.LocalPublish, "invalid_topic": bs.Dropped.Invalid,
		} {
			if v > 0 {
				st.Drops[reason] = v
			}
		}
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(cfg.Gateway.DataDir, &fs); err == nil {
		st.Disk.FreeBytes = fs.Bavail * uint64(fs.Bsize)
		st.Disk.TotalBytes = fs.Blocks * uint64(fs.Bsize)
	}
	return st
}

func (s consoleSource) Devices() []console.Device {
	g := s.g
	g.mu.Lock()
	devs := g.devs
	g.mu.Unlock()
	if devs == nil {
		return nil
	}
	stats := map[string]devices.DeviceStats{}
	for _, d := range devs.Stats().Devices {
		stats[d.Name] = d
	}
	var out []console.Device
	for _, d := range devs.Devices() {
		ds := stats[d.Name()]
		cd := console.Device{Name: d.Name(), Driver: d.Config.Driver, Online: ds.Online, Polls: ds.Polls, PollErrors: ds.PollErrors,
			ReadErrors: ds.ReadErrors, Writes: ds.Writes, WriteErrors: ds.WriteErrors, LastSample: ds.LastSample,
			LastError: ds.LastError, LastErrorTime: ds.LastErrorTime}
		for _, p := range d.Points {
			pc := p.Config
			cd.Points = append(cd.Points, console.Point{Name: p.Name(), Topic: devs.PointTopic(p), Unit: pc.Unit, Writable: pc.Writable,
				Min: pc.Min, Max: pc.Max, StaleAfter: staleAfter(pc)})
		}
		out = append(out, cd)
	}
	return out
}

// rateMeter turns a counter into a rate per second, smoothed over the
// calls (at least a second apart) that feed it.
type rateMeter struct {
	mu   sync.Mutex
	t    time.Time
	n    uint64
	rate float64
}

func (r *rateMeter) update(now time.Time, n uint64) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch dt := now.Sub(r.t); {
	case r.t.IsZero() || n < r.n:
		r.t, r.n = now, n
	case dt >= time.Second:
		inst := float64(n-r.n) / dt.Seconds()
		if r.rate == 0 {
			r.rate = inst
		} else {
			r.rate = (r.rate + inst) / 2
		}
		r.t, r.n = now, n
	}
	return r.rate
}

// staleAfter is how old a point's value may get before the console marks
// it stale: a value is republished at every poll unless a deadband holds
// it back, and at least at every heartbeat. Points whose values only come
// on change (a deadband and no heartbeat), and streamed points, are never
// stale by age; they are when their device goes offline.
func staleAfter(pc devices.PointConfig) time.Duration {
	banded := pc.Deadband > 0 || pc.DeadbandPercent > 0
	var heartbeat time.Duration
	if pc.Heartbeat != nil {
		heartbeat = *pc.Heartbeat
	}
	switch {
	case pc.Poll <= 0:
		return 0
	case !banded && heartbeat == 0:
		return 3*pc.Poll + time.Second
	case heartbeat > 0:
		return heartbeat + 2*pc.Poll + time.Second
	}
	return 0
}

func (s consoleSource) Clients() []console.Client {
	s.g.mu.Lock()
	b := s.g.broker
	s.g.mu.Unlock()
	if b == nil {
		return nil
	}
	var out []console.Client
	for _, c := range b.Clients() {
		proto := map[byte]string{3: "MQTT 3.1", 4: "MQTT 3.1.1", 5: "MQTT 5"}[c.Protocol]
		if proto == "" {
			proto = fmt.Sprintf("level %d", c.Protocol)
		}
		out = append(out, console.Client{ID: c.ID, Username: c.Username, Remote: c.Remote, Protocol: proto,
			Subscriptions: c.Subscriptions, Inflight: c.Inflight, Queued: c.Queued})
	}
	return out
}

// consoleOrigin names the console as an in-process publisher.
const consoleOrigin = "console"

// Write sends value to the point's `<topic>/set` on the local broker with
// an MQTT 5 response topic, exactly as a local client would, and waits for
// the devices' answer there: the same validation, write and read-back.
func (s consoleSource) Write(ctx context.Context, device, point, value string) (any, error) {
	g := s.g
	g.mu.Lock()
	b, devs := g.broker, g.devs
	g.mu.Unlock()
	if b == nil || devs == nil {
		return nil, errors.New("the gateway is not running")
	}
	topic := ""
	for _, d := range devs.Devices() {
		for _, p := range d.Points {
			if d.Name() == device && p.Name() == point {
				topic = devs.PointTopic(p)
			}
		}
	}
	if topic == "" {
		return nil, fmt.Errorf("no point %s/%s", device, point)
	}
	id := make([]byte, 12)
	_, _ = rand.Read(id)
	resp := "$fieldgate/console/write/" + hex.EncodeToString(id)
	answer := make(chan []byte, 1)
	unsub, err := b.Subscribe(resp, func(m broker.Message) {
		select {
		case answer <- m.Payload:
		default:
		}
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to the answer: %w", err)
	}
	defer unsub()
	if err := b.Publish(ctx, broker.Message{Topic: topic + "/set", Payload: []byte(value), QoS: 1, Origin: consoleOrigin,
		ResponseTopic: resp, CorrelationData: id}); err != nil {
		return nil, fmt.Errorf("publish the write request: %w", err)
	}
	select {
	case p := <-answer:
		var r struct {
			OK    bool   `json:"ok"`
			Value any    `json:"value"`
			Error string `json:"error"`
		}
		if err := json.Unmarshal(p, &r); err != nil {
			return nil, fmt.Errorf("unreadable answer %q: %w", p, err)
		}
		if !r.OK {
			return nil, errors.New(r.Error)
		}
		return r.Value, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("no answer from device %s: %w", device, ctx.Err())
	}
}

func (s consoleSource) RunningConfig() console.RunningConfig {
	g := s.g
	g.mu.Lock()
	cfg := g.cfg
	g.mu.Unlock()
	g.cw.mu.Lock()
	defer g.cw.mu.Unlock()
	if g.cw.yamlOf != cfg { // rendered once per configuration (a reload makes a new one)
		text, err := redactedYAML(cfg)
		if err != nil {
			text = "configuration could not be shown: " + err.Error()
		}
		g.cw.yamlOf, g.cw.yamlText = cfg, text
	}
	return console.RunningConfig{YAML: g.cw.yamlText, LastReload: g.cw.lastReload}
}

// secretKey matches configuration keys whose values are secrets.
var secretKey = regexp.MustCompile(`(?i)(password|passwd|secret|token|credential|(^|_)key)$|password_hash$`)

// redactedYAML marshals cfg with every secret replaced by "[redacted]":
// values of keys such as password_hash, password, *_secret, *_token or
// *_key (file names of keys are kept), and credentials inside URLs.
func redactedYAML(cfg *Config) (string, error) {
	var n yaml.Node
	if err := n.Encode(cfg); err != nil {
		return "", fmt.Errorf("encode: %w", err)
	}
	redactNode(&n)
	// In device maps a zero (offset: 0, writable: false, poll: 0s…) means
	// "not used": hide those too, or a 200-point map fills pages.
	top := &n
	if top.Kind == yaml.DocumentNode && len(top.Content) > 0 {
		top = top.Content[0]
	}
	for i := 0; top.Kind == yaml.MappingNode && i+1 < len(top.Content); i += 2 {
		if top.Content[i].Value == "devices" {
			pruneZero(top.Content[i+1])
		}
	}
	pruneEmpty(&n)
	var b strings.Builder
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return "", fmt.Errorf("marshal: %w", err)
	}
	return b.String(), nil
}

// pruneZero drops keys whose value is 0, 0s or false, under n.
func pruneZero(n *yaml.Node) {
	for _, c := range n.Content {
		pruneZero(c)
	}
	if n.Kind != yaml.MappingNode {
		return
	}
	kept := n.Content[:0]
	for i := 0; i+1 < len(n.Content); i += 2 {
		v := n.Content[i+1]
		if v.Kind == yaml.ScalarNode && v.Style == 0 && (v.Value == "0" || v.Value == "0s" || v.Value == "false") {
			continue
		}
		kept = append(kept, n.Content[i], v)
	}
	n.Content = kept
}

// pruneEmpty drops keys whose value is null, "" or an empty list or map:
// options left unset, which only make the page longer.
func pruneEmpty(n *yaml.Node) {
	for _, c := range n.Content {
		pruneEmpty(c)
	}
	if n.Kind != yaml.MappingNode {
		return
	}
	kept := n.Content[:0]
	for i := 0; i+1 < len(n.Content); i += 2 {
		v := n.Content[i+1]
		empty := v.Kind == yaml.ScalarNode && (v.Tag == "!!null" || v.Value == "" && v.Style == 0 || v.Tag == "!!str" && v.Value == "") ||
			(v.Kind == yaml.MappingNode || v.Kind == yaml.SequenceNode) && len(v.Content) == 0
		if !empty {
			kept = append(kept, n.Content[i], v)
		}
	}
	n.Content = kept
}

func redactNode(n *yaml.Node) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if secretKey.MatchString(k.Value) && !(v.Kind == yaml.ScalarNode && v.Value == "") {
				*v = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "[redacted]"}
				continue
			}
			redactNode(v)
		}
	case yaml.SequenceNode, yaml.DocumentNode:
		for _, c := range n.Content {
			redactNode(c)
		}
	case yaml.ScalarNode:
		n.Value = redactURL(n.Value)
	}
}

// redactURL hides the password of a URL with credentials.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil || u.Scheme == "" {
		return s
	}
	if _, has := u.User.Password(); has {
		return u.Redacted()
	}
	return s
}
