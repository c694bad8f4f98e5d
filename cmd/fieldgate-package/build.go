package main

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
)

// scripts holds the Debian maintainer scripts (postinst, prerm, postrm).
//
//go:embed scripts
var scripts embed.FS

const (
	pkgName        = "fieldgate"
	defaultVersion = "0.0.0~dev"

	binDest    = "/usr/bin/fieldgate"
	unitDest   = "/lib/systemd/system/fieldgate.service"
	confDir    = "/etc/fieldgate"
	configDest = confDir + "/fieldgate.yaml"
)

// goarch maps the supported Debian architectures to GOARCH (equal for now;
// armhf would need GOARCH=arm GOARM=7).
var goarch = map[string]string{"amd64": "amd64", "arm64": "arm64"}

// options says what to build. Paths are relative to Root unless absolute.
type options struct {
	Root    string   // module root, the directory of go.mod
	Version string   // Debian upstream version, also stamped into the binary
	Out     string   // output directory, created if missing
	Arches  []string // Debian architectures: amd64, arm64
	Config  string   // example configuration → /etc/fieldgate/fieldgate.yaml
	Unit    string   // systemd unit → /lib/systemd/system/fieldgate.service
	Main    string   // Go package of the binary, e.g. ./cmd/fieldgate
}

// artifact is what build produced for one architecture.
type artifact struct {
	Arch   string
	Binary string // the static executable
	Deb    string // the Debian package
}

var versionPattern = regexp.MustCompile(`^[0-9][A-Za-z0-9.+~-]*$`)

// defaultConfig picks the example configuration shipped in the package.
func defaultConfig(root string) string {
	p := filepath.Join("configs", "fieldgate.yaml")
	if _, err := os.Stat(filepath.Join(root, p)); err == nil {
		return p
	}
	return filepath.Join("configs", "demo.yaml")
}

// normalize validates o and makes its paths absolute.
func (o *options) normalize() error {
	o.Version = strings.TrimPrefix(o.Version, "v")
	if !versionPattern.MatchString(o.Version) {
		return fmt.Errorf("version %q: want a Debian upstream version starting with a digit (e.g. 1.2.0, 1.2.0~rc1)", o.Version)
	}
	if len(o.Arches) == 0 {
		return fmt.Errorf("no architecture given")
	}
	for _, a := range o.Arches {
		if _, ok := goarch[a]; !ok {
			return fmt.Errorf("architecture %q: want amd64 or arm64", a)
		}
	}
	root, err := filepath.Abs(o.Root)
	if err != nil {
		return fmt.Errorf("module root: %w", err)
	}
	o.Root = root
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return fmt.Errorf("module root %s: %w (run from the directory of go.mod)", root, err)
	}
	abs := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(root, p)
	}
	o.Out, o.Config, o.Unit = abs(o.Out), abs(o.Config), abs(o.Unit)
	for _, f := range []string{o.Config, o.Unit} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("package file: %w", err)
		}
	}
	return nil
}

// build compiles the binary and writes the package for every architecture of
// o, in order. o must have been normalized. Progress goes to log.
func build(ctx context.Context, o options, log io.Writer) ([]artifact, error) {
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, fmt.Errorf("output directory: %w", err)
	}
	scriptDir, err := os.MkdirTemp("", "fieldgate-package-scripts-")
	if err != nil {
		return nil, fmt.Errorf("scripts: %w", err)
	}
	defer os.RemoveAll(scriptDir)
	if err := writeScripts(scriptDir); err != nil {
		return nil, err
	}
	var arts []artifact
	for _, arch := range o.Arches {
		a := artifact{
			Arch:   arch,
			Binary: filepath.Join(o.Out, "fieldgate-linux-"+arch),
			Deb:    filepath.Join(o.Out, fmt.Sprintf("%s_%s_%s.deb", pkgName, o.Version, arch)),
		}
		fmt.Fprintf(log, "building %s for linux/%s\n", o.Main, arch)
		if err := buildBinary(ctx, o.Root, o.Main, goarch[arch], o.Version, a.Binary); err != nil {
			return nil, err
		}
		fmt.Fprintf(log, "packaging %s\n", a.Deb)
		if err := writeDeb(o, arch, a.Binary, scriptDir, a.Deb); err != nil {
			return nil, err
		}
		arts = append(arts, a)
	}
	return arts, nil
}

// buildBinary cross-compiles a static, stripped, reproducible binary.
func buildBinary(ctx context.Context, root, mainPkg, arch, version, dst string) error {
	ldflags := "-s -w -X main.version=" + version
	// The commit and its date (not the wall clock: the build stays
	// reproducible), when the source is a git checkout.
	if rev, err := exec.CommandContext(ctx, "git", "-C", root, "rev-parse", "--short=12", "HEAD").Output(); err == nil {
		ldflags += " -X main.commit=" + strings.TrimSpace(string(rev))
	}
	if date, err := exec.CommandContext(ctx, "git", "-C", root, "log", "-1", "--format=%cI").Output(); err == nil && len(bytes.TrimSpace(date)) > 0 {
		ldflags += " -X main.buildDate=" + strings.TrimSpace(string(date))
	}
	cmd := exec.CommandContext(ctx, "go", "build",
		"-trimpath",
		"-ldflags", ldflags,
		"-o", dst, mainPkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s for linux/%s: %w\n%s", mainPkg, arch, err, out.Bytes())
	}
	return nil
}

// writeScripts copies the embedded maintainer scripts into dir: nfpm reads
// scripts from files.
func writeScripts(dir string) error {
	return fs.WalkDir(scripts, "scripts", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := scripts.ReadFile(path)
		if err != nil {
			return fmt.Errorf("script %s: %w", path, err)
		}
		if err := os.WriteFile(filepath.Join(dir, d.Name()), data, 0o755); err != nil {
			return fmt.Errorf("script %s: %w", path, err)
		}
		return nil
	})
}

// packageInfo describes the Debian package of one architecture.
func packageInfo(o options, arch, binary, scriptDir string) *nfpm.Info {
	info := &nfpm.Info{
		Name:          pkgName,
		Arch:          arch,
		Platform:      "linux",
		Version:       o.Version,
		VersionSchema: "none",
		Section:       "net",
		Priority:      "optional",
		Maintainer:    "fieldgate maintainers <fieldgate@localhost>",
		Description: "edge gateway: MQTT broker, Modbus/serial pollers, store-and-forward bridge\n" +
			"fieldgate runs an embedded MQTT broker, polls serial, Modbus RTU and Modbus TCP\n" +
			"devices, and relays messages to an upstream MQTT broker through a durable\n" +
			"on-disk buffer, in order and without loss across outages and restarts.",
		Homepage: "https://github.com/fieldgate/fieldgate",
		Overridables: nfpm.Overridables{
			Depends: []string{"adduser"},
			Contents: files.Contents{
				{Source: binary, Destination: binDest, FileInfo: &files.ContentFileInfo{Mode: 0o755}},
				{Source: o.Unit, Destination: unitDest, FileInfo: &files.ContentFileInfo{Mode: 0o644}},
				{Destination: confDir, Type: files.TypeDir, FileInfo: &files.ContentFileInfo{Mode: 0o750}},
				{Source: o.Config, Destination: configDest, Type: files.TypeConfigNoReplace, FileInfo: &files.ContentFileInfo{Mode: 0o640}},
			},
			Scripts: nfpm.Scripts{
				PostInstall: filepath.Join(scriptDir, "postinst"),
				PreRemove:   filepath.Join(scriptDir, "prerm"),
				PostRemove:  filepath.Join(scriptDir, "postrm"),
			},
		},
	}
	return nfpm.WithDefaults(info)
}

// writeDeb writes the Debian package of one architecture to dst.
func writeDeb(o options, arch, binary, scriptDir, dst string) error {
	info := packageInfo(o, arch, binary, scriptDir)
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return fmt.Errorf("deb %s: %w", arch, err)
	}
	f, err := os.Create(dst)
	if err != nil {
		return fmt.Errorf("deb %s: %w", arch, err)
	}
	if err := deb.Default.Package(info, f); err != nil {
		f.Close()
		os.Remove(dst)
		return fmt.Errorf("deb %s: %w", arch, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("deb %s: %w", arch, err)
	}
	return nil
}
