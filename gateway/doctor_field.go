package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fieldgate/fieldgate/bridge"
)

// upstreamMQTT logs in to the upstream with the configured credentials,
// through the bridge's own connection code (bridge.Probe).
func (d *doctor) upstreamMQTT(ctx context.Context, cfg *Config) {
	const check = "upstream login"
	up := cfg.Bridge.Upstream
	up.ConnectTimeout = min(up.ConnectTimeout, doctorMaxDial)
	if up.ConnectTimeout <= 0 {
		up.ConnectTimeout = doctorDialLimit
	}
	start := time.Now()
	id, err := bridge.Probe(ctx, up, cfg.Gateway.ID)
	user := up.Username
	if user == "" {
		user = "(none)"
	}
	if err != nil {
		d.report(checkFail, check, "%v (username %s, client id %s)%s", err, user, id, hintSuffix(bridge.ConnectHint(err)))
		return
	}
	d.report(checkOK, check, "MQTT %s CONNECT accepted as username %s (client id %s, %v)", up.Protocol, user, id, time.Since(start).Round(time.Millisecond))
}

// modbusTCP dials every Modbus TCP endpoint once, naming the devices behind
// it.
func (d *doctor) modbusTCP(ctx context.Context, cfg *Config) {
	byAddr := map[string][]string{}
	for _, dev := range cfg.Devices {
		if dev.Driver == "modbus" && dev.Transport == "tcp" {
			byAddr[dev.Address] = append(byAddr[dev.Address], dev.Name)
		}
	}
	addrs := make([]string, 0, len(byAddr))
	for a := range byAddr {
		addrs = append(addrs, a)
	}
	sort.Strings(addrs)
	for _, addr := range addrs {
		check := "modbus tcp " + strings.Join(byAddr[addr], ", ")
		dctx, cancel := context.WithTimeout(ctx, doctorDialLimit)
		start := time.Now()
		var dialer net.Dialer
		conn, err := dialer.DialContext(dctx, "tcp", addr)
		cancel()
		if err != nil {
			d.report(checkFail, check, "%s: %v (check the device's address and that nothing blocks port %s)", addr, err, portOf(addr))
			continue
		}
		conn.Close()
		d.report(checkOK, check, "%s reachable (TCP connect %v)", addr, time.Since(start).Round(time.Millisecond))
	}
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// secretFiles checks that every *_file key names a file the service user
// can read, its directories included.
func (d *doctor) secretFiles(cfg *Config) {
	files := map[string]string{} // key path → file
	for i, l := range cfg.Broker.Listeners {
		if l.TLS == nil {
			continue
		}
		at := fmt.Sprintf("broker.listeners[%d].tls.", i)
		files[at+"cert_file"], files[at+"key_file"], files[at+"client_ca_file"] = l.TLS.CertFile, l.TLS.KeyFile, l.TLS.ClientCAFile
	}
	if b := cfg.Bridge; b != nil {
		files["bridge.upstream.password_file"] = b.Upstream.PasswordFile
		files["bridge.upstream.tls.ca_file"] = b.Upstream.TLS.CAFile
		files["bridge.upstream.tls.cert_file"] = b.Upstream.TLS.CertFile
		files["bridge.upstream.tls.key_file"] = b.Upstream.TLS.KeyFile
	}
	keys := make([]string, 0, len(files))
	for k, f := range files {
		if f != "" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, key := range keys {
		d.secretFile(key, files[key])
	}
}

func (d *doctor) secretFile(key, name string) {
	check := "file " + key
	abs, err := filepath.Abs(name)
	if err != nil {
		d.report(checkFail, check, "%s: %v", name, err)
		return
	}
	var dirs []string // from / down to the file's directory
	for dir := filepath.Dir(abs); ; dir = filepath.Dir(dir) {
		dirs = append([]string{dir}, dirs...)
		if dir == filepath.Dir(dir) {
			break
		}
	}
	for _, dir := range dirs {
		fi, err := os.Stat(dir)
		if err == nil && !d.subject.may(fi, 1) {
			d.report(checkFail, check, "%s: user %s cannot enter directory %s (mode %04o): chmod o+x or chgrp %s it", name, d.subject.name, dir, fi.Mode().Perm(), ServiceUser)
			return
		}
	}
	fi, err := os.Stat(abs)
	switch {
	case err != nil:
		d.report(checkFail, check, "%v", err)
		return
	case fi.IsDir():
		d.report(checkFail, check, "%s is a directory, not a file", name)
		return
	case !d.subject.may(fi, 4):
		st, _ := fi.Sys().(*syscall.Stat_t)
		owner := "?"
		if st != nil {
			owner = strconv.FormatUint(uint64(st.Uid), 10) + ":" + doctorGroupName(st.Gid)
		}
		d.report(checkFail, check, "%s is not readable by user %s (mode %04o, owner %s): chgrp %s %s && chmod 0640 %s", name, d.subject.name, fi.Mode().Perm(), owner, ServiceUser, name, name)
		return
	}
	if strings.HasSuffix(key, "password_file") || strings.HasSuffix(key, "key_file") {
		if fi.Mode().Perm()&0o004 != 0 {
			d.report(checkWarn, check, "%s is readable by every user (mode %04o): chmod o-r %s", name, fi.Mode().Perm(), name)
			return
		}
	}
	d.report(checkOK, check, "%s readable by user %s", name, d.subject.name)
}

// dataDirLock says whether a gateway is running on the data directory, and
// which process it is.
func (d *doctor) dataDirLock(dir string) {
	const check = "data dir lock"
	path := filepath.Join(dir, ".lock")
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		d.report(checkOK, check, "%s is not in use", dir)
		return
	}
	if err != nil {
		d.report(checkWarn, check, "%s: %v", path, err)
		return
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		d.report(checkOK, check, "%s is not in use by a running gateway", dir)
		return
	}
	d.report(checkOK, check, "%s is in use by a running gateway%s: a second `fieldgate run` on it is refused", dir, lockHolder(f))
}

// lockHolder names the process holding the flock on f, as " (pid N,
// fieldgate)", from /proc/locks; "" when it cannot be told.
func lockHolder(f *os.File) string {
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	id := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	locks, err := os.Open("/proc/locks")
	if err != nil {
		return ""
	}
	defer locks.Close()
	sc := bufio.NewScanner(locks)
	for sc.Scan() {
		// 1: FLOCK  ADVISORY  WRITE 1234 08:01:123456 0 EOF
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[1] != "FLOCK" {
			continue
		}
		if fields[5] != id {
			continue
		}
		pid := fields[4]
		if comm, err := os.ReadFile(filepath.Join("/proc", pid, "comm")); err == nil {
			return fmt.Sprintf(" (pid %s, %s)", pid, strings.TrimSpace(string(comm)))
		}
		return fmt.Sprintf(" (pid %s)", pid)
	}
	return ""
}
