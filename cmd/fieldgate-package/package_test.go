package main

import (
	"bytes"
	"context"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const testVersion = "1.2.3~test"

// moduleRoot is the directory of go.mod.
const moduleRoot = "../.."

// The packages are built once per test binary: cross-compiling fieldgate
// twice is the slow part of these tests.
var (
	buildOnce sync.Once
	buildDir  string
	built     map[string]artifact // by architecture
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// testOptions are the options of a build of this module's fieldgate into dir.
func testOptions(dir string) options {
	return options{
		Root:    moduleRoot,
		Version: testVersion,
		Out:     dir,
		Arches:  []string{"amd64", "arm64"},
		Config:  defaultConfig(moduleRoot),
		Unit:    "systemd/fieldgate.service",
		Main:    "./cmd/fieldgate",
	}
}

// artifacts builds both architectures' binaries and packages (once) and
// returns them by architecture.
func artifacts(t *testing.T) map[string]artifact {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "fieldgate-package-test-")
		if buildErr != nil {
			return
		}
		o := testOptions(buildDir)
		if buildErr = o.normalize(); buildErr != nil {
			return
		}
		var arts []artifact
		arts, buildErr = build(context.Background(), o, io.Discard)
		built = make(map[string]artifact)
		for _, a := range arts {
			built[a.Arch] = a
		}
	})
	if buildErr != nil {
		t.Fatalf("build packages: %v", buildErr)
	}
	return built
}

func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is required (apt-get install -y %s): %v", name, debianPackageOf(name), err)
	}
	return p
}

func debianPackageOf(tool string) string {
	switch tool {
	case "qemu-aarch64-static":
		return "qemu-user-static"
	}
	return "dpkg"
}

func output(t *testing.T, name string, args ...string) string {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return string(out)
}

func TestNormalizeRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*options)
		want string
	}{
		{"version without digit", func(o *options) { o.Version = "latest" }, "version"},
		{"unknown arch", func(o *options) { o.Arches = []string{"armhf"} }, "architecture"},
		{"missing config", func(o *options) { o.Config = "configs/nope.yaml" }, "nope.yaml"},
		{"missing unit", func(o *options) { o.Unit = "systemd/nope.service" }, "nope.service"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := testOptions(t.TempDir())
			tc.edit(&o)
			err := o.normalize()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("normalize() = %v, want an error about %q", err, tc.want)
			}
		})
	}
	o := testOptions(t.TempDir())
	o.Version = "v2.0.1"
	if err := o.normalize(); err != nil || o.Version != "2.0.1" {
		t.Fatalf("normalize(v2.0.1) = %v, version %q; want nil, 2.0.1", err, o.Version)
	}
}

// TestDebContents inspects the packages with dpkg-deb: files and modes,
// control fields, conffiles, maintainer scripts.
func TestDebContents(t *testing.T) {
	requireTool(t, "dpkg-deb")
	arts := artifacts(t)
	for _, arch := range []string{"amd64", "arm64"} {
		t.Run(arch, func(t *testing.T) {
			debPath := arts[arch].Deb
			var got []string
			for _, line := range strings.Split(strings.TrimSpace(output(t, "dpkg-deb", "-c", debPath)), "\n") {
				// drwxr-xr-x root/root 0 2026-01-01 00:00 ./etc/
				f := strings.Fields(line)
				if len(f) < 6 || strings.HasSuffix(f[5], "/") && f[5] != "./etc/fieldgate/" {
					continue
				}
				got = append(got, f[0]+" "+f[1]+" "+f[5])
			}
			want := []string{
				"drwxr-x--- root/root ./etc/fieldgate/",
				"-rw-r----- root/root ./etc/fieldgate/fieldgate.yaml",
				"-rw-r--r-- root/root ./lib/systemd/system/fieldgate.service",
				"-rwxr-xr-x root/root ./usr/bin/fieldgate",
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("dpkg-deb -c (-want +got):\n%s", diff)
			}

			fields := map[string]string{}
			for _, f := range []string{"Package", "Version", "Architecture", "Depends", "Maintainer"} {
				fields[f] = strings.TrimSpace(output(t, "dpkg-deb", "-f", debPath, f))
			}
			wantFields := map[string]string{
				"Package":      "fieldgate",
				"Version":      testVersion,
				"Architecture": arch,
				"Depends":      "adduser",
				"Maintainer":   "fieldgate maintainers <fieldgate@localhost>",
			}
			if diff := cmp.Diff(wantFields, fields); diff != "" {
				t.Errorf("control fields (-want +got):\n%s", diff)
			}

			if got := strings.TrimSpace(output(t, "dpkg-deb", "-I", debPath, "conffiles")); got != configDest {
				t.Errorf("conffiles = %q, want %q", got, configDest)
			}
			for _, s := range []string{"postinst", "prerm", "postrm"} {
				want, err := scripts.ReadFile("scripts/" + s)
				if err != nil {
					t.Fatal(err)
				}
				if got := output(t, "dpkg-deb", "-I", debPath, s); got != string(want) {
					t.Errorf("%s in the package differs from scripts/%s", s, s)
				}
			}

			// The unit, the example configuration and the binary are the ones built from the repository.
			x := t.TempDir()
			output(t, "dpkg-deb", "-x", debPath, x)
			sameFile(t, filepath.Join(moduleRoot, "systemd/fieldgate.service"), filepath.Join(x, unitDest))
			sameFile(t, filepath.Join(moduleRoot, defaultConfig(moduleRoot)), filepath.Join(x, configDest))
			sameFile(t, arts[arch].Binary, filepath.Join(x, binDest))
		})
	}
}

func sameFile(t *testing.T, want, got string) {
	t.Helper()
	a, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(got)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("%s differs from %s", got, want)
	}
}

// TestBinariesStatic checks each binary's machine and that it is statically
// linked: no program interpreter, no shared library.
func TestBinariesStatic(t *testing.T) {
	arts := artifacts(t)
	for arch, machine := range map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64} {
		t.Run(arch, func(t *testing.T) {
			f, err := elf.Open(arts[arch].Binary)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Machine != machine || f.Class != elf.ELFCLASS64 || f.Type != elf.ET_EXEC {
				t.Errorf("ELF machine %v class %v type %v, want %v ELFCLASS64 ET_EXEC", f.Machine, f.Class, f.Type, machine)
			}
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
					t.Errorf("program header %v: binary is dynamically linked", p.Type)
				}
			}
			if libs, err := f.ImportedLibraries(); err == nil && len(libs) > 0 {
				t.Errorf("imports shared libraries %v", libs)
			}
			if f.Section(".symtab") != nil {
				t.Errorf("binary has a symbol table: not stripped (-s)")
			}
		})
	}
}

// TestVersionStamped runs the host's binary: -X main.version took effect.
func TestVersionStamped(t *testing.T) {
	arts := artifacts(t)
	got := strings.TrimSpace(output(t, arts["amd64"].Binary, "version"))
	if want := "fieldgate " + testVersion + " (commit "; !strings.HasPrefix(got, want) || strings.Contains(got, "commit unknown") {
		t.Errorf("fieldgate version = %q, want %q, the commit and the build date", got, want)
	}
}
