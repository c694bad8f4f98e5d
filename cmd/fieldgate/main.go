// Command fieldgate is an edge gateway: an embedded MQTT broker, Modbus and
// serial device pollers, and a store-and-forward bridge to an upstream broker.
//
// Usage:
//
//	fieldgate run     [--config FILE]   run the gateway
//	fieldgate check   [--config FILE]   validate the configuration
//	fieldgate passwd                    prompt for a password (or read it on stdin), print its bcrypt hash
//	fieldgate probe   [flags]           read raw Modbus registers, show every decoding
//	fieldgate doctor  [--config FILE]   check what breaks field installs
//	fieldgate version                   print the version
//
// Exit codes: 0 success; 1 invalid configuration; 2 usage error; 3 runtime
// failure (a listener could not bind, the data directory is unusable, a
// device could not be probed, a doctor check failed, shutdown exceeded its
// deadline); 4 a component (broker, bridge, buffer, devices, homeassistant,
// http) failed while the gateway was running: it was logged, the gateway
// stopped, and systemd's Restart=on-failure starts it again.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/term"

	"github.com/fieldgate/fieldgate/gateway"
)

// Exit codes, documented in the README.
const (
	exitOK      = 0
	exitConfig  = 1
	exitUsage   = 2
	exitRuntime = 3
	exitFailed  = 4
)

// Set at build time with -ldflags "-X main.version=… -X main.commit=…
// -X main.buildDate=…" (cmd/fieldgate-package does); a plain go build
// falls back to what the Go toolchain recorded.
var (
	version   = ""
	commit    = ""
	buildDate = ""
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stderr)
	case "check":
		return cmdCheck(args[1:], stdout, stderr)
	case "passwd":
		return cmdPasswd(args[1:], stdin, stdout, stderr)
	case "probe":
		return cmdProbe(args[1:], stdout, stderr)
	case "doctor":
		return cmdDoctor(args[1:], stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "fieldgate", buildInfo())
		return exitOK
	case "help", "--help", "-h":
		usage(stdout)
		return exitOK
	}
	fmt.Fprintf(stderr, "fieldgate: unknown command %q\n", args[0])
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: fieldgate <command> [flags]

commands:
  run     [--config FILE]  run the gateway (default config `+gateway.DefaultConfigPath+`)
  check   [--config FILE]  validate the configuration: every problem with its path and line
  passwd                   prompt twice for a password (or read one line on stdin), print a bcrypt hash for password_hash
  probe   [flags]          read raw Modbus registers and show every type/order decoding
  doctor  [--config FILE]  check serial ports, data dir and its lock, secret files, clock sync, Modbus TCP, upstream TLS and login
  version                  print the version

exit codes: 0 ok, 1 invalid configuration, 2 usage error, 3 runtime failure,
            4 a component failed while running (logged; restart the gateway)
`)
}

// buildInfo is this binary's version, commit and build date: the values
// stamped with -ldflags, else the module version and VCS stamp the Go
// toolchain recorded, else "dev" and "unknown".
func buildInfo() gateway.BuildInfo {
	b := gateway.BuildInfo{Version: version, Commit: commit, Date: buildDate}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if b.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			b.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision" && b.Commit == "":
				b.Commit = s.Value
			case s.Key == "vcs.time" && b.Date == "":
				b.Date = s.Value
			}
		}
	}
	if b.Version == "" {
		b.Version = "dev"
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	}
	if b.Date == "" {
		b.Date = "unknown"
	}
	return b
}

func configFlag(name string, args []string, stderr io.Writer) (string, bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", gateway.DefaultConfigPath, "configuration file")
	if err := fs.Parse(args); err != nil {
		return "", false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "fieldgate %s: unexpected argument %q\n", name, fs.Arg(0))
		return "", false
	}
	return *path, true
}

// loadConfig parses --config and loads the file, printing every problem.
// A non-zero code means the command should exit with it.
func loadConfig(name string, args []string, stderr io.Writer) (string, *gateway.Config, int) {
	path, ok := configFlag(name, args, stderr)
	if !ok {
		return "", nil, exitUsage
	}
	load := gateway.Load
	if name == "doctor" {
		load = gateway.LoadForDoctor // it checks the *_file keys itself, for the service user
	}
	cfg, err := load(path, gateway.Drivers(discardLogger()))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return "", nil, exitConfig
	}
	return path, cfg, exitOK
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	path, cfg, code := loadConfig("check", args, stderr)
	if code != exitOK {
		return code
	}
	fmt.Fprintf(stdout, "%s: ok\n", path)
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(stdout, "warning: %s\n", w)
	}
	fmt.Fprint(stdout, gateway.Summary(cfg))
	return exitOK
}

func cmdDoctor(args []string, stdout, stderr io.Writer) int {
	_, cfg, code := loadConfig("doctor", args, stderr)
	if code != exitOK {
		return code
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if !gateway.Doctor(ctx, cfg, stdout) {
		return exitRuntime
	}
	return exitOK
}

func cmdRun(args []string, stderr io.Writer) int {
	path, ok := configFlag("run", args, stderr)
	if !ok {
		return exitUsage
	}
	// Signals are caught before anything else, so that one arriving while
	// the configuration loads does not take its default action (SIGHUP's
	// kills the process). SIGHUP reloads; it stays caught until the
	// process exits (never signal.Stop or Ignore: both reset the handler
	// first, and a SIGHUP in that moment kills the process), so that
	// `systemctl reload` while the gateway stops cannot kill it. Once the
	// reloading loop below has returned, they go unread.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	reload := make(chan os.Signal, 1)
	signal.Notify(reload, syscall.SIGHUP)

	boot := gateway.NewLogger(gateway.LogConfig{Level: "info", Format: "text"}, stderr)
	drivers := gateway.Drivers(boot)
	cfg, err := gateway.Load(path, drivers)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	log := gateway.NewLogger(cfg.Gateway.Log, stderr)
	for _, w := range cfg.Warnings() {
		log.Warn("config: " + w.String())
	}
	gw, err := gateway.New(cfg, gateway.Drivers(log), log)
	if err != nil {
		log.Error("start failed", "err", err)
		return exitRuntime
	}
	build := buildInfo()
	gw.SetBuild(build)
	gw.SetVersion(build.Version)
	// The reloading goroutine ends with Run (the gateway also refuses
	// reloads once it stops) and is waited for before exiting.
	reloadCtx, stopReloads := context.WithCancel(ctx)
	var reloads sync.WaitGroup
	reloads.Go(func() {
		for {
			select {
			case <-reloadCtx.Done():
				return
			case <-reload:
				if err := gw.Reload(path); err != nil {
					log.Error("reload rejected; keeping the running configuration", "err", err)
				}
			}
		}
	})
	err = gw.Run(ctx)
	stopReloads()
	reloads.Wait()
	var failed *gateway.ComponentError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &failed):
		return exitFailed // logged by the gateway when it happened
	case gateway.Hint(err) != "":
		log.Error("fieldgate failed", "err", err, "hint", gateway.Hint(err))
		return exitRuntime
	default:
		log.Error("fieldgate failed", "err", err)
		return exitRuntime
	}
}

func cmdPasswd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintln(stderr, "usage: fieldgate passwd   (prompts on a terminal; otherwise reads one line from stdin)")
		return exitUsage
	}
	var pw string
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		var code int
		if pw, code = promptPassword(int(f.Fd()), stderr); code != exitOK {
			return code
		}
	} else {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			fmt.Fprintln(stderr, "fieldgate passwd:", err)
			return exitRuntime
		}
		pw = strings.TrimRight(line, "\r\n")
	}
	if pw == "" {
		fmt.Fprintln(stderr, "fieldgate passwd: empty password")
		return exitUsage
	}
	hash, err := gateway.HashPassword(pw)
	if err != nil {
		fmt.Fprintln(stderr, "fieldgate passwd:", err)
		return exitUsage
	}
	fmt.Fprintln(stdout, hash)
	return exitOK
}

// promptPassword asks for the password twice on the terminal fd, without
// echo.
func promptPassword(fd int, stderr io.Writer) (string, int) {
	read := func(prompt string) (string, error) {
		fmt.Fprint(stderr, prompt)
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(stderr)
		return string(b), err
	}
	first, err := read("Password: ")
	if err != nil {
		fmt.Fprintln(stderr, "fieldgate passwd:", err)
		return "", exitRuntime
	}
	again, err := read("Password again: ")
	if err != nil {
		fmt.Fprintln(stderr, "fieldgate passwd:", err)
		return "", exitRuntime
	}
	if first != again {
		fmt.Fprintln(stderr, "fieldgate passwd: the passwords do not match")
		return "", exitUsage
	}
	return first, exitOK
}
