package main

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// stubScript records its command line in $FG_STUB_LOG. getent answers from
// $FG_STUB_DB (lines "passwd NAME" / "group NAME"), dpkg-statoverride --list
// too (lines "statoverride PATH"); adduser --system adds its user (and group
// with --group) to that file.
const stubScript = `#!/bin/sh
name=$(basename "$0")
echo "$name $*" >>"$FG_STUB_LOG"
case "$name" in
getent)
	grep -qx "$1 $2" "$FG_STUB_DB" || exit 2
	;;
dpkg-statoverride)
	grep -qx "statoverride $2" "$FG_STUB_DB" || exit 1
	;;
adduser)
	case " $* " in
	*" --system "*)
		for user; do :; done
		echo "passwd $user" >>"$FG_STUB_DB"
		case " $* " in *" --group "*) echo "group $user" >>"$FG_STUB_DB" ;; esac
		;;
	esac
	;;
esac
exit 0
`

// sandbox is a throwaway dpkg root whose maintainer scripts see stubs for
// every command that would touch the real system's users or services.
type sandbox struct {
	t          *testing.T
	root       string // dpkg --root; DPKG_ROOT for the scripts
	stubs, log string
	db         string
}

func newSandbox(t *testing.T, systemd bool, db ...string) *sandbox {
	t.Helper()
	dir := t.TempDir()
	s := &sandbox{
		t:     t,
		root:  filepath.Join(dir, "root"),
		stubs: filepath.Join(dir, "stubs"),
		log:   filepath.Join(dir, "log"),
		db:    filepath.Join(dir, "db"),
	}
	for _, d := range []string{filepath.Join(s.root, "var/lib/dpkg/info"), filepath.Join(s.root, "var/lib/dpkg/updates"), s.stubs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if systemd {
		if err := os.MkdirAll(filepath.Join(s.root, "run/systemd/system"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(t, filepath.Join(s.root, "var/lib/dpkg/status"), "")
	write(t, s.db, strings.Join(append(db, ""), "\n"))
	for _, c := range []string{"adduser", "addgroup", "getent", "chgrp", "chown", "dpkg-statoverride", "systemctl", "deb-systemd-helper", "deb-systemd-invoke"} {
		if err := os.WriteFile(filepath.Join(s.stubs, c), []byte(stubScript), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (s *sandbox) env() []string {
	return append(os.Environ(),
		"PATH="+s.stubs+":"+os.Getenv("PATH"),
		"FG_STUB_LOG="+s.log,
		"FG_STUB_DB="+s.db,
	)
}

// dpkg runs dpkg on the sandbox root. Scripts run chrootless with DPKG_ROOT
// set to the root; dependencies (adduser) are not installed there.
func (s *sandbox) dpkg(args ...string) {
	s.t.Helper()
	base := []string{"--root=" + s.root, "--force-not-root", "--force-script-chrootless", "--force-depends", "--log=/dev/null"}
	cmd := exec.Command("dpkg", append(base, args...)...)
	cmd.Env = s.env()
	if out, err := cmd.CombinedOutput(); err != nil {
		s.t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// script runs one maintainer script directly, as dpkg would in s.root.
func (s *sandbox) script(name string, args ...string) {
	s.t.Helper()
	path := filepath.Join(s.t.TempDir(), name)
	data, err := scripts.ReadFile("scripts/" + name)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o755); err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(s.env(), "DPKG_ROOT="+s.root)
	if out, err := cmd.CombinedOutput(); err != nil {
		s.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// calls returns and clears the stubs' log, with the root's path shown as $ROOT.
func (s *sandbox) calls() []string {
	s.t.Helper()
	data, err := os.ReadFile(s.log)
	if err != nil && !os.IsNotExist(err) {
		s.t.Fatal(err)
	}
	os.Remove(s.log)
	text := strings.ReplaceAll(strings.TrimSpace(string(data)), s.root, "$ROOT")
	if text == "" {
		return nil
	}
	return strings.Split(text, "\n")
}

func (s *sandbox) path(p string) string { return filepath.Join(s.root, p) }

func (s *sandbox) exists(p string) bool {
	_, err := os.Lstat(s.path(p))
	return err == nil
}

func (s *sandbox) version() string {
	s.t.Helper()
	return output(s.t, "dpkg-query", "--admindir="+s.path("var/lib/dpkg"), "-W", "-f", "${Version} ${Status}", "fieldgate")
}

// TestInstallUpgradeRemove installs the amd64 package into a throwaway root,
// upgrades it over an edited configuration, removes and purges it, and
// checks the files and every command the maintainer scripts ran.
func TestInstallUpgradeRemove(t *testing.T) {
	requireTool(t, "dpkg")
	arts := artifacts(t)
	s := newSandbox(t, true, "group dialout")

	// First install: user created, config readable by its group, systemd
	// reloaded, and the service neither enabled nor started.
	s.dpkg("-i", arts["amd64"].Deb)
	want := []string{
		"getent passwd fieldgate",
		"getent group fieldgate",
		"adduser --quiet --system --group --home /var/lib/fieldgate --no-create-home fieldgate",
		"getent group dialout",
		"adduser --quiet fieldgate dialout",
		"dpkg-statoverride --list /etc/fieldgate",
		"chgrp fieldgate $ROOT/etc/fieldgate",
		"dpkg-statoverride --list /etc/fieldgate/fieldgate.yaml",
		"chgrp fieldgate $ROOT/etc/fieldgate/fieldgate.yaml",
		"systemctl daemon-reload",
	}
	if diff := cmp.Diff(want, s.calls()); diff != "" {
		t.Errorf("first install ran (-want +got):\n%s", diff)
	}
	if got, want := s.version(), testVersion+" install ok installed"; got != want {
		t.Errorf("dpkg status %q, want %q", got, want)
	}
	for p, mode := range map[string]fs.FileMode{
		"usr/bin/fieldgate":                    0o755,
		"lib/systemd/system/fieldgate.service": 0o644,
		"etc/fieldgate/fieldgate.yaml":         0o640,
		"etc/fieldgate":                        0o750 | fs.ModeDir,
	} {
		fi, err := os.Stat(s.path(p))
		if err != nil {
			t.Errorf("installed file: %v", err)
			continue
		}
		if fi.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), mode)
		}
	}

	// The operator edits the configuration; an upgrade keeps it and
	// restarts the service only if it runs (try-restart).
	conf := s.path("etc/fieldgate/fieldgate.yaml")
	edited, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	edited = append(edited, "# edited on site\n"...)
	if err := os.WriteFile(conf, edited, 0o640); err != nil {
		t.Fatal(err)
	}
	next := nextVersionDeb(t, arts["amd64"].Binary, "1.2.4")
	s.dpkg("-i", next)
	want = []string{
		"getent passwd fieldgate",
		"getent group dialout",
		"adduser --quiet fieldgate dialout",
		"dpkg-statoverride --list /etc/fieldgate",
		"chgrp fieldgate $ROOT/etc/fieldgate",
		"dpkg-statoverride --list /etc/fieldgate/fieldgate.yaml",
		"chgrp fieldgate $ROOT/etc/fieldgate/fieldgate.yaml",
		"systemctl daemon-reload",
		"systemctl try-restart fieldgate.service",
	}
	if diff := cmp.Diff(want, s.calls()); diff != "" {
		t.Errorf("upgrade ran (-want +got):\n%s", diff)
	}
	if got, want := s.version(), "1.2.4 install ok installed"; got != want {
		t.Errorf("dpkg status %q, want %q", got, want)
	}
	if got, err := os.ReadFile(conf); err != nil || string(got) != string(edited) {
		t.Errorf("edited configuration not kept on upgrade (err %v)", err)
	}
	for _, suffix := range []string{".dpkg-new", ".dpkg-dist", ".dpkg-old"} {
		if s.exists("etc/fieldgate/fieldgate.yaml" + suffix) {
			t.Errorf("upgrade left %s", "fieldgate.yaml"+suffix)
		}
	}

	// Remove: stopped and disabled; configuration and data stay.
	if err := os.MkdirAll(s.path("var/lib/fieldgate/buffer"), 0o750); err != nil {
		t.Fatal(err)
	}
	s.dpkg("--remove", "fieldgate")
	want = []string{
		"systemctl stop fieldgate.service",
		"systemctl disable --quiet fieldgate.service",
		"systemctl daemon-reload",
	}
	if diff := cmp.Diff(want, s.calls()); diff != "" {
		t.Errorf("remove ran (-want +got):\n%s", diff)
	}
	for p, want := range map[string]bool{
		"usr/bin/fieldgate":                    false,
		"lib/systemd/system/fieldgate.service": false,
		"etc/fieldgate/fieldgate.yaml":         true,
		"var/lib/fieldgate/buffer":             true,
	} {
		if got := s.exists(p); got != want {
			t.Errorf("after remove: %s exists = %v, want %v", p, got, want)
		}
	}

	// Purge: configuration and data directory gone.
	s.dpkg("--purge", "fieldgate")
	if diff := cmp.Diff([]string{"systemctl daemon-reload"}, s.calls()); diff != "" {
		t.Errorf("purge ran (-want +got):\n%s", diff)
	}
	for _, p := range []string{"etc/fieldgate/fieldgate.yaml", "var/lib/fieldgate"} {
		if s.exists(p) {
			t.Errorf("after purge: %s still exists", p)
		}
	}
}

// nextVersionDeb packages binary again under another version.
func nextVersionDeb(t *testing.T, binary, version string) string {
	t.Helper()
	dir := t.TempDir()
	o := testOptions(dir)
	o.Version = version
	if err := o.normalize(); err != nil {
		t.Fatal(err)
	}
	if err := writeScripts(dir); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "next.deb")
	if err := writeDeb(o, "amd64", binary, dir, dst); err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestMaintainerScripts runs the scripts directly for the cases an
// install-upgrade-remove cycle does not reach.
func TestMaintainerScripts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		systemd bool
		db      []string
		script  string
		args    []string
		want    []string
	}{
		{
			name: "first install without systemd", db: []string{"group dialout"},
			script: "postinst", args: []string{"configure", ""},
			want: []string{
				"getent passwd fieldgate",
				"getent group fieldgate",
				"adduser --quiet --system --group --home /var/lib/fieldgate --no-create-home fieldgate",
				"getent group dialout",
				"adduser --quiet fieldgate dialout",
				"dpkg-statoverride --list /etc/fieldgate",
				"chgrp fieldgate $ROOT/etc/fieldgate",
				"dpkg-statoverride --list /etc/fieldgate/fieldgate.yaml",
				"chgrp fieldgate $ROOT/etc/fieldgate/fieldgate.yaml",
			},
		},
		{
			name: "group left from an earlier install", db: []string{"group dialout", "group fieldgate"},
			script: "postinst", args: []string{"configure", ""},
			want: []string{
				"getent passwd fieldgate",
				"getent group fieldgate",
				"adduser --quiet --system --ingroup fieldgate --home /var/lib/fieldgate --no-create-home fieldgate",
				"getent group dialout",
				"adduser --quiet fieldgate dialout",
				"dpkg-statoverride --list /etc/fieldgate",
				"chgrp fieldgate $ROOT/etc/fieldgate",
				"dpkg-statoverride --list /etc/fieldgate/fieldgate.yaml",
				"chgrp fieldgate $ROOT/etc/fieldgate/fieldgate.yaml",
			},
		},
		{
			name: "upgrade without systemd, no dialout group", db: []string{"passwd fieldgate", "group fieldgate"},
			script: "postinst", args: []string{"configure", "1.0.0"},
			want: []string{
				"getent passwd fieldgate",
				"getent group dialout",
				"dpkg-statoverride --list /etc/fieldgate",
				"chgrp fieldgate $ROOT/etc/fieldgate",
				"dpkg-statoverride --list /etc/fieldgate/fieldgate.yaml",
				"chgrp fieldgate $ROOT/etc/fieldgate/fieldgate.yaml",
			},
		},
		{
			name: "rights kept by dpkg-statoverride", db: []string{"passwd fieldgate", "statoverride /etc/fieldgate", "statoverride /etc/fieldgate/fieldgate.yaml"},
			script: "postinst", args: []string{"configure", "1.0.0"},
			want: []string{
				"getent passwd fieldgate",
				"getent group dialout",
				"dpkg-statoverride --list /etc/fieldgate",
				"dpkg-statoverride --list /etc/fieldgate/fieldgate.yaml",
			},
		},
		{
			name: "reinstall after remove with systemd", systemd: true, db: []string{"passwd fieldgate", "group fieldgate", "group dialout"},
			script: "postinst", args: []string{"configure", ""},
			want: []string{
				"getent passwd fieldgate",
				"getent group dialout",
				"adduser --quiet fieldgate dialout",
				"dpkg-statoverride --list /etc/fieldgate",
				"chgrp fieldgate $ROOT/etc/fieldgate",
				"dpkg-statoverride --list /etc/fieldgate/fieldgate.yaml",
				"chgrp fieldgate $ROOT/etc/fieldgate/fieldgate.yaml",
				"systemctl daemon-reload",
			},
		},
		{name: "prerm remove without systemd", script: "prerm", args: []string{"remove"}},
		{name: "prerm upgrade with systemd", systemd: true, script: "prerm", args: []string{"upgrade", "1.2.4"}},
		{name: "postrm remove without systemd", script: "postrm", args: []string{"remove"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSandbox(t, tc.systemd, tc.db...)
			if err := os.MkdirAll(s.path("etc/fieldgate"), 0o755); err != nil {
				t.Fatal(err)
			}
			write(t, s.path("etc/fieldgate/fieldgate.yaml"), "gateway: {}\n")
			s.script(tc.script, tc.args...)
			if diff := cmp.Diff(tc.want, s.calls()); diff != "" {
				t.Errorf("%s %v ran (-want +got):\n%s", tc.script, tc.args, diff)
			}
			if tc.script == "postinst" {
				want := fs.FileMode(0o640)
				if strings.Contains(tc.name, "statoverride") {
					want = 0o644 // as written above: left alone
				}
				fi, err := os.Stat(s.path("etc/fieldgate/fieldgate.yaml"))
				if err != nil || fi.Mode() != want {
					t.Errorf("config mode %v (err %v), want %v", fi.Mode(), err, want)
				}
			}
		})
	}
}

// TestPostinstRealAdduser runs the postinst with Debian's real adduser in a
// private mount namespace where /etc is a copy: the user, its groups and the
// configuration's group are checked in that copy; the host's /etc is never
// written.
func TestPostinstRealAdduser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestPostinstRealAdduser needs root (it creates a user in a private copy of /etc)")
	}
	requireTool(t, "unshare")
	requireTool(t, "adduser")
	dir := t.TempDir()
	etc := filepath.Join(dir, "etc")
	if out, err := exec.Command("cp", "-a", "/etc", etc).CombinedOutput(); err != nil {
		t.Fatalf("copy /etc: %v\n%s", err, out)
	}
	for _, f := range []string{"passwd", "group"} {
		data, err := os.ReadFile(filepath.Join(etc, f))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(data), "\nfieldgate:") || strings.HasPrefix(string(data), "fieldgate:") {
			t.Fatalf("this machine already has a fieldgate entry in /etc/%s: the test needs a system without it", f)
		}
	}
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(filepath.Join(root, "etc/fieldgate"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(root, "etc/fieldgate/fieldgate.yaml"), "gateway: {}\n")
	postinst := filepath.Join(dir, "postinst")
	data, _ := scripts.ReadFile("scripts/postinst")
	if err := os.WriteFile(postinst, data, 0o755); err != nil {
		t.Fatal(err)
	}
	// Twice: a first install, then an upgrade, after dpkg unpacked the
	// configuration as root:root again, must find everything in place.
	inner := `set -e
mount --bind "$ETC_COPY" /etc
"$POSTINST" configure ""
chown root:root "$DPKG_ROOT/etc/fieldgate" "$DPKG_ROOT/etc/fieldgate/fieldgate.yaml"
"$POSTINST" configure 1.0.0
getent passwd fieldgate
getent group fieldgate
getent group dialout
`
	cmd := exec.CommandContext(context.Background(), "unshare", "--mount", "--propagation", "private", "sh", "-c", inner)
	cmd.Env = append(os.Environ(), "ETC_COPY="+etc, "POSTINST="+postinst, "DPKG_ROOT="+root)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("postinst in a mount namespace: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	ent := map[string][]string{}
	for _, l := range lines {
		f := strings.Split(l, ":")
		if len(f) >= 4 && (f[0] == "fieldgate" || f[0] == "dialout") {
			ent[f[0]+"/"+strconv.Itoa(len(f))] = f
		}
	}
	pw, gr, dialout := ent["fieldgate/7"], ent["fieldgate/4"], ent["dialout/4"]
	if pw == nil || gr == nil || dialout == nil {
		t.Fatalf("getent output lacks the user or groups:\n%s", out)
	}
	uid, _ := strconv.Atoi(pw[2])
	if uid == 0 || uid >= 1000 || pw[3] != gr[2] || pw[5] != "/var/lib/fieldgate" || !strings.HasSuffix(pw[6], "nologin") {
		t.Errorf("passwd entry %q: want a system uid, group fieldgate, home /var/lib/fieldgate, nologin shell", strings.Join(pw, ":"))
	}
	if !strings.Contains(","+dialout[3]+",", ",fieldgate,") {
		t.Errorf("dialout members %q lack fieldgate", dialout[3])
	}
	if n := strings.Count(string(out), "edit /etc/fieldgate/fieldgate.yaml"); n != 1 {
		t.Errorf("first-install hint printed %d times, want once (not on upgrade):\n%s", n, out)
	}
	gid, _ := strconv.Atoi(gr[2])
	for p, mode := range map[string]fs.FileMode{"etc/fieldgate": 0o750 | fs.ModeDir, "etc/fieldgate/fieldgate.yaml": 0o640} {
		fi, err := os.Stat(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); int(st.Gid) != gid || fi.Mode() != mode {
			t.Errorf("%s: gid %d mode %v, want gid %d (fieldgate) mode %v", p, st.Gid, fi.Mode(), gid, mode)
		}
	}
	if data, err := os.ReadFile("/etc/passwd"); err != nil || strings.Contains(string(data), "\nfieldgate:") {
		t.Fatalf("the host's /etc/passwd was changed (err %v)", err)
	}
}
