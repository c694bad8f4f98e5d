// Command fieldgate-package cross-builds static fieldgate binaries and a
// Debian package for each target architecture. Run it from the module root:
//
//	go run ./cmd/fieldgate-package [--version V] [--out DIR] [--arch arm64,amd64]
//	                               [--config FILE] [--unit FILE]
//
// For each architecture (default arm64 and amd64) it writes
//
//	DIR/fieldgate-linux-ARCH        the binary (CGO_ENABLED=0, -trimpath, stripped)
//	DIR/fieldgate_V_ARCH.deb        the package
//
// The package installs /usr/bin/fieldgate, /lib/systemd/system/fieldgate.service
// (from systemd/fieldgate.service) and the example configuration as the
// conffile /etc/fieldgate/fieldgate.yaml (from configs/fieldgate.yaml, or
// configs/demo.yaml while the former does not exist), so dpkg keeps an edited
// configuration on upgrade. Its maintainer scripts (scripts/, embedded in this
// program) create the fieldgate system user in group dialout, reload systemd,
// never start the service on a first install, restart it on upgrade only if it
// was running, and stop it on removal.
//
// Nothing is downloaded but Go modules: the packages are written by nfpm used
// as a library. Exit codes: 0 success, 1 build failure, 2 usage error.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fieldgate-package", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var arches string
	fs.StringVar(&o.Version, "version", defaultVersion, "package and binary version (Debian upstream version; a leading v is dropped)")
	fs.StringVar(&o.Out, "out", "dist", "output directory")
	fs.StringVar(&arches, "arch", "arm64,amd64", "comma-separated target architectures (arm64, amd64)")
	fs.StringVar(&o.Config, "config", "", "example configuration installed as /etc/fieldgate/fieldgate.yaml (default configs/fieldgate.yaml, else configs/demo.yaml)")
	fs.StringVar(&o.Unit, "unit", "systemd/fieldgate.service", "systemd unit installed as /lib/systemd/system/fieldgate.service")
	fs.StringVar(&o.Main, "main", "./cmd/fieldgate", "Go package of the binary")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "fieldgate-package: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	o.Root = "."
	o.Arches = strings.Split(arches, ",")
	if o.Config == "" {
		o.Config = defaultConfig(o.Root)
	}
	if err := o.normalize(); err != nil {
		fmt.Fprintln(stderr, "fieldgate-package:", err)
		return 2
	}
	arts, err := build(ctx, o, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "fieldgate-package:", err)
		return 1
	}
	for _, a := range arts {
		fmt.Fprintln(stdout, a.Binary)
		fmt.Fprintln(stdout, a.Deb)
	}
	return 0
}
