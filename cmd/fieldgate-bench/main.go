// Command fieldgate-bench measures the fieldgate binary side by side with
// Debian's mosquitto on loopback, and soaks the gateway under a flapping
// upstream and repeated kill -9.
//
// It drives the gateway from outside (a subprocess with a generated config,
// its MQTT listener and its /metrics) and imports nothing of the module.
//
// Usage:
//
//	go run ./cmd/fieldgate-bench                 # full bench, one table
//	go run ./cmd/fieldgate-bench --quick --json  # CI-sized, machine-readable
//	go run ./cmd/fieldgate-bench --only qos1,drain
//	go run ./cmd/fieldgate-bench --soak --soak-duration 30m
//
// The ingest-floor row runs this binary as "fieldgate-bench serve-floor ADDR
// DIR": the least any durable ingest does, as a reference (see floor.go).
//
// Exit codes: 0 measured (goals may be missed: they are reported, not
// enforced); 1 a scenario failed to run or the soak lost acknowledged
// messages; 2 usage error.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// ingestInflight is the number of QoS 1 publishes in flight in the durable
// ingest goal (and the drain's fill).
const ingestInflight = 64

// options are the parsed flags plus what was derived from them.
type options struct {
	gateway       string
	mosquitto     string
	mosqInflight  int
	host          string
	targets       []string
	only          []string
	quick         bool
	jsonOut       bool
	fromJSON      string
	messages      int64
	duration      time.Duration
	window        int
	repeat        int
	payload       int
	ingestMsgs    int64
	ingestPubs    int
	drainMessages int64
	drainLive     bool // the upstream subscriber receives while the gateway drains
	idle          time.Duration
	settle        time.Duration
	modbusBaud    int
	modbusWindow  time.Duration
	python        string

	soak         bool
	soakDuration time.Duration
	soakKill     time.Duration
	soakFlap     time.Duration
	soakSample   time.Duration
}

// scenarioNames lists every scenario in run order.
func scenarioNames() []string {
	var n []string
	for _, q := range []int{0, 1, 2} {
		for _, s := range shapes {
			n = append(n, fmt.Sprintf("qos%d-%s", q, s.name))
		}
	}
	return append(n, "idle", "ingest", "ingest-nostore", "ingest-floor", "drain", "modbus-"+slavePymodbus, "modbus-"+slaveGo)
}

func (o *options) selected(name string) bool {
	if len(o.only) == 0 {
		return true
	}
	for _, s := range o.only {
		if s == name || strings.HasPrefix(name, s+"-") {
			return true
		}
	}
	return false
}

func (o *options) has(target string) bool { return slices.Contains(o.targets, target) }

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("fieldgate-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.gateway, "gateway", "", "path to a built fieldgate binary (default: build ./cmd/fieldgate into a temp dir)")
	fs.StringVar(&o.mosquitto, "mosquitto", "/usr/sbin/mosquitto", "path to mosquitto")
	fs.IntVar(&o.mosqInflight, "mosquitto-inflight", 0, "mosquitto's max_inflight_messages (0 = unlimited; queues are always unlimited, so no setting drops)")
	fs.StringVar(&o.host, "host", "127.0.0.1", "loopback address to bind and dial (non-loopback is refused)")
	targets := fs.String("targets", "gateway,mosquitto", "systems to measure: gateway, mosquitto")
	only := fs.String("only", "", "comma-separated scenarios or prefixes (qos1, qos0-2x2, idle, ingest, ingest-nostore, ingest-floor, drain, modbus)")
	fs.BoolVar(&o.quick, "quick", false, "CI-sized run: few messages, short windows")
	fs.BoolVar(&o.jsonOut, "json", false, "print JSON instead of the table")
	fs.StringVar(&o.fromJSON, "from-json", "", "print the table of a report saved with --json, and run nothing")
	fs.Int64Var(&o.messages, "messages", 0, "publishes per throughput scenario, split over its publishers (default 50000, quick 2000)")
	fs.DurationVar(&o.duration, "duration", 0, "publish for this long per throughput scenario instead of --messages")
	fs.IntVar(&o.repeat, "repeat", 1, "runs per throughput scenario and target, alternating targets; the table shows the median rate (delivery counts every run)")
	fs.IntVar(&o.window, "window", 100, "in-flight QoS 1/2 publishes per publisher")
	fs.IntVar(&o.payload, "payload", 64, "payload bytes (at least 8: publisher id and sequence)")
	fs.Int64Var(&o.ingestMsgs, "ingest-messages", 0, "publishes for the durable ingest scenario (default 300000, quick 2000)")
	fs.IntVar(&o.ingestPubs, "ingest-publishers", 8, "publishers sharing the 64 in-flight publishes of the ingest and drain-fill scenarios (1, 2, 4, 8, 16, 32 or 64)")
	fs.Int64Var(&o.drainMessages, "drain-messages", 0, "backlog size for the drain scenario (default 1000000, quick 10000)")
	fs.BoolVar(&o.drainLive, "drain-live-subscriber", false, "drain with the upstream subscriber receiving meanwhile on the same cores (default: it collects after the drain)")
	fs.IntVar(&o.modbusBaud, "modbus-baud", 9600, "baud rate of the Modbus RTU device (sets the wire-limited rate)")
	fs.StringVar(&o.python, "python", "/usr/bin/python3", "python with Debian's pymodbus")
	fs.BoolVar(&o.soak, "soak", false, "run the soak test instead of the bench")
	fs.DurationVar(&o.soakDuration, "soak-duration", 30*time.Minute, "length of the soak (at most 24h)")
	fs.DurationVar(&o.soakKill, "soak-kill-every", 0, "kill -9 the gateway this often (default duration/6, at least 20s)")
	fs.DurationVar(&o.soakFlap, "soak-flap-every", 0, "cut or restore the upstream link this often (default duration/15, at least 5s)")
	fs.DurationVar(&o.soakSample, "soak-sample-every", 10*time.Second, "memory sampling period")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var errs []error
	if err := checkLoopbackHost(o.host); err != nil {
		errs = append(errs, fmt.Errorf("--host: %w", err))
	}
	for _, t := range strings.Split(*targets, ",") {
		if t = strings.TrimSpace(t); t == "" {
			continue
		}
		if t != "gateway" && t != "mosquitto" {
			errs = append(errs, fmt.Errorf("--targets: unknown target %q", t))
		}
		o.targets = append(o.targets, t)
	}
	names := scenarioNames()
	for _, s := range strings.Split(*only, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if !slices.ContainsFunc(names, func(n string) bool { return n == s || strings.HasPrefix(n, s+"-") }) {
			errs = append(errs, fmt.Errorf("--only: unknown scenario %q (have %s)", s, strings.Join(names, ", ")))
		}
		o.only = append(o.only, s)
	}
	if o.payload < payloadHeader {
		errs = append(errs, fmt.Errorf("--payload: at least %d bytes", payloadHeader))
	}
	if o.ingestPubs < 1 || o.ingestPubs > ingestInflight || ingestInflight%o.ingestPubs != 0 {
		errs = append(errs, fmt.Errorf("--ingest-publishers: a divisor of %d", ingestInflight))
	}
	if o.repeat < 1 || o.repeat > 9 {
		errs = append(errs, errors.New("--repeat: 1..9"))
	}
	if o.window < 1 || o.window > 65535 {
		errs = append(errs, errors.New("--window: 1..65535"))
	}
	if o.soakDuration <= 0 || o.soakDuration > 24*time.Hour {
		errs = append(errs, errors.New("--soak-duration: between 0 and 24h"))
	}
	if o.soakKill != 0 && o.soakKill < 5*time.Second {
		errs = append(errs, errors.New("--soak-kill-every: at least 5s (the gateway must get up between kills)"))
	}
	if o.soakFlap != 0 && o.soakFlap < time.Second {
		errs = append(errs, errors.New("--soak-flap-every: at least 1s"))
	}
	if o.soakSample < time.Second {
		errs = append(errs, errors.New("--soak-sample-every: at least 1s"))
	}
	if o.soak && !o.has("gateway") {
		errs = append(errs, errors.New("--soak needs the gateway target"))
	}
	def := func(v *int64, full, quick int64) {
		if *v == 0 {
			*v = full
			if o.quick {
				*v = quick
			}
		}
	}
	def(&o.messages, 50_000, 2_000)
	def(&o.ingestMsgs, 300_000, 2_000)
	def(&o.drainMessages, 1_000_000, 10_000)
	o.idle, o.settle, o.modbusWindow = 5*time.Second, 2*time.Second, 10*time.Second
	if o.quick {
		o.idle, o.settle, o.modbusWindow = 3*time.Second, time.Second, 3*time.Second
	}
	if o.soakKill == 0 {
		o.soakKill = max(o.soakDuration/6, 20*time.Second)
	}
	if o.soakFlap == 0 {
		o.soakFlap = max(o.soakDuration/15, 5*time.Second)
	}
	return o, errors.Join(errs...)
}

// report is the --json document.
type report struct {
	Command   string      `json:"command"`
	Started   time.Time   `json:"started"`
	GoVersion string      `json:"go_version"`
	CPUs      int         `json:"cpus"`
	Quick     bool        `json:"quick"`
	Results   []result    `json:"results"`
	Goals     []goal      `json:"goals"`
	Soak      *soakReport `json:"soak,omitempty"`
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "serve-floor" {
		// Internal: the ingest-floor row runs the bench binary this way.
		if len(args) != 3 {
			fmt.Fprintln(stderr, "usage: fieldgate-bench serve-floor ADDR DIR")
			return 2
		}
		if err := serveFloor(ctx, args[1], args[2]); err != nil {
			fmt.Fprintln(stderr, "fieldgate-bench:", err)
			return 1
		}
		return 0
	}
	o, err := parseFlags(args, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "fieldgate-bench:", err)
		}
		return 2
	}
	if o.fromJSON != "" {
		return printSaved(o.fromJSON, stdout, stderr)
	}
	dir, err := os.MkdirTemp("", "fieldgate-bench")
	if err != nil {
		fmt.Fprintln(stderr, "fieldgate-bench:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if o.has("mosquitto") || o.soak || o.selected("drain") {
		if _, err := os.Stat(o.mosquitto); err != nil {
			fmt.Fprintf(stderr, "fieldgate-bench: mosquitto not found at %s (apt-get install -y mosquitto): %v\n", o.mosquitto, err)
			return 1
		}
	}
	if o.has("gateway") && o.gateway == "" {
		o.gateway = filepath.Join(dir, "fieldgate")
		fmt.Fprintln(stderr, "building ./cmd/fieldgate …")
		build := exec.CommandContext(ctx, "go", "build", "-o", o.gateway, "./cmd/fieldgate")
		build.Stdout, build.Stderr = stderr, stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(stderr, "fieldgate-bench: build ./cmd/fieldgate (run from the module root, or pass --gateway):", err)
			return 1
		}
	}
	rep := &report{
		Command:   "fieldgate-bench " + strings.Join(args, " "),
		Started:   time.Now().UTC(),
		GoVersion: runtime.Version(),
		CPUs:      runtime.NumCPU(),
		Quick:     o.quick,
	}
	failed := false
	if o.soak {
		sr, err := soak(ctx, o, dir, stderr)
		rep.Soak = sr
		if err != nil {
			fmt.Fprintln(stderr, "fieldgate-bench: soak:", err)
			failed = true
		}
		if sr != nil && !sr.Pass {
			failed = true
		}
	} else {
		rep.Results = bench(ctx, o, dir, stderr)
		rep.Goals = goals(o, rep.Results)
		for _, r := range rep.Results {
			if r.Error != "" {
				failed = true
			}
		}
	}
	if o.jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintln(stderr, "fieldgate-bench:", err)
			return 1
		}
	} else if o.soak {
		printSoak(stdout, rep.Soak)
	} else {
		printTable(stdout, rep)
	}
	if failed {
		return 1
	}
	return 0
}

// printSaved prints the table (or soak summary) of a saved --json report.
func printSaved(path string, stdout, stderr io.Writer) int {
	raw, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(stderr, "fieldgate-bench:", err)
		return 1
	}
	var rep report
	if err := json.Unmarshal(raw, &rep); err != nil {
		fmt.Fprintf(stderr, "fieldgate-bench: %s: %v\n", path, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s (%s, %d CPUs, %s)\n", rep.Command, rep.GoVersion, rep.CPUs, rep.Started.Format(time.RFC3339))
	if rep.Soak != nil {
		judgeMemory(rep.Soak) // with the current rule, from the saved samples
		printSoak(stdout, rep.Soak)
	} else {
		printTable(stdout, &rep)
	}
	return 0
}

// bench runs every selected scenario on every target, each on a fresh
// process, and returns the results in order.
func bench(ctx context.Context, o *options, dir string, stderr io.Writer) []result {
	var out []result
	n := 0
	next := func() string { n++; return filepath.Join(dir, fmt.Sprintf("run%02d", n)) }
	logr := func(r result) {
		msg := fmt.Sprintf("%-12s %-9s rate %10.0f/s  delivery %6.2f%%", r.Scenario, r.Target, r.Rate, 100*r.DeliveryRatio)
		if r.Error != "" {
			msg += "  error: " + r.Error
		}
		fmt.Fprintln(stderr, msg)
		out = append(out, r)
	}
	for _, qos := range []byte{0, 1, 2} {
		for _, sh := range shapes {
			name := fmt.Sprintf("qos%d-%s", qos, sh.name)
			if !o.selected(name) {
				continue
			}
			runs := map[string][]result{}
			for range o.repeat {
				for _, t := range o.targets {
					if ctx.Err() != nil {
						return out
					}
					spec := loadSpec{
						pubs: sh.pubs, subs: sh.subs, qos: qos, window: o.window,
						messages: o.messages, duration: o.duration, payload: o.payload,
						topic: "bench", subFilter: "bench/#", idle: o.idle,
					}
					b, err := startTarget(o, t, next(), gatewaySpec{})
					if err != nil {
						runs[t] = append(runs[t], result{Scenario: name, Target: t, QoS: int(qos), Error: err.Error()})
						continue
					}
					runs[t] = append(runs[t], throughput(ctx, b, name, spec))
					b.stop()
				}
			}
			for _, t := range o.targets {
				logr(median(runs[t]))
			}
		}
	}
	if o.selected("idle") {
		for _, t := range o.targets {
			logr(idleRSS(ctx, o, t, next()))
		}
	}
	// ingest-nostore is a reference for the gateway only: the same load
	// with a forward route that matches none of its topics, so that nothing
	// is stored (mosquitto's ingest stores nothing anyway).
	for _, sc := range []struct{ name, forward string }{{"ingest", "ingest/#"}, {"ingest-nostore", "nostore/#"}} {
		if !o.selected(sc.name) {
			continue
		}
		for _, t := range o.targets {
			if sc.name == "ingest-nostore" && t != "gateway" {
				continue
			}
			spec := loadSpec{pubs: o.ingestPubs, window: ingestInflight / o.ingestPubs, qos: 1, messages: o.ingestMsgs, payload: o.payload, topic: "ingest"}
			// The upstream port is free and stays closed: everything buffers.
			port, err := freePort(o.host)
			if err != nil {
				logr(result{Scenario: sc.name, Target: t, Error: err.Error()})
				continue
			}
			b, err := startTarget(o, t, next(), gatewaySpec{upstream: fmt.Sprintf("%s:%d", o.host, port), forward: sc.forward})
			if err != nil {
				logr(result{Scenario: sc.name, Target: t, Error: err.Error()})
				continue
			}
			r := ingest(ctx, b, spec, sc.name)
			b.stop()
			logr(r)
		}
	}
	// ingest-floor is the machine's reference: the same load on the least
	// any durable ingest does (see floor.go).
	if o.selected("ingest-floor") && ctx.Err() == nil {
		logr(ingestFloor(ctx, o, next()))
	}
	if o.selected("drain") && o.has("gateway") && ctx.Err() == nil {
		logr(drain(ctx, o, next()))
	}
	for _, sl := range []string{slavePymodbus, slaveGo} {
		if o.selected("modbus-"+sl) && o.has("gateway") && ctx.Err() == nil {
			logr(modbus(ctx, o, next(), sl))
		}
	}
	return out
}
