package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fieldgate/fieldgate/bridge"
	"github.com/fieldgate/fieldgate/devices"
)

// ServiceUser is the account the Debian package creates and the systemd
// unit runs as. Doctor, run as root, checks access rights for it.
const ServiceUser = "fieldgate"

// Doctor thresholds.
const (
	doctorMinFree    = 1 << 30             // warn below 1 GiB free in the data dir
	doctorCertExpiry = 30 * 24 * time.Hour // warn when the upstream certificate expires sooner
	doctorMaxDial    = 10 * time.Second    // cap on bridge.upstream.connect_timeout
	doctorDialLimit  = 5 * time.Second     // when connect_timeout is unset
)

// doctorClockFloor: a clock before this is certainly wrong (a Pi without RTC boots
// at its last saved time or 1970); certificates will not verify.
var doctorClockFloor = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// Doctor checks what breaks field installs and writes one line per check,
//
//	ok|warn|FAIL  <check>: <detail>
//
// to w: for every device with `port:` or `usb:`, that the serial port exists
// and is readable and writable (by ServiceUser when run as root and that
// user exists, else by this process); that the data directory is writable and
// has free space (warning below 1 GiB or below twice the buffer's max_bytes);
// that the clock is NTP-synchronised (warning otherwise: readings would carry
// wrong timestamps); and that the bridge upstream answers a TCP connection
// and, for mqtts:// and wss://, completes a verified TLS handshake with the
// configured CA and server name (warning when its certificate expires within
// 30 days), then accepts an MQTT CONNECT with the configured credentials
// (through bridge.Probe, with its own client id). It also reports whether
// a running gateway holds the data directory (and its PID), whether every
// *_file key is readable by the service user, and whether every Modbus TCP
// endpoint accepts a connection. It returns true when no check failed;
// warnings are allowed.
//
// cfg must have been loaded (defaulted and validated). Doctor touches the
// network only to dial the upstream, bounded by its connect timeout and ctx.
func Doctor(ctx context.Context, cfg *Config, w io.Writer) bool {
	d := &doctor{
		subject: doctorCurrentSubject(),
		now:     time.Now,
		synced:  ClockSynchronized,
	}
	return d.run(ctx, cfg, w)
}

// checkStatus is the outcome of one check.
type checkStatus int

const (
	checkOK checkStatus = iota
	checkWarn
	checkFail
)

func (s checkStatus) String() string {
	return [...]string{"ok", "warn", "FAIL"}[s]
}

// doctorSubject is the account whose access rights are checked.
type doctorSubject struct {
	name string
	uid  int
	gids []int
	// self is true when subject is this process: then a write is also
	// tried for real (read-only mounts, ACLs, LSMs).
	self bool
}

// doctor holds the seams of the checks.
type doctor struct {
	subject doctorSubject
	now     func() time.Time
	synced  func() (bool, error)
	roots   *x509.CertPool // nil: system roots (tests set a pool)
	failed  bool
	fails   int // checks failed so far
	w       io.Writer
}

func (d *doctor) report(s checkStatus, check, format string, args ...any) {
	if s == checkFail {
		d.failed = true
		d.fails++
	}
	fmt.Fprintf(d.w, "%-4s  %s: %s\n", s, check, fmt.Sprintf(format, args...))
}

func (d *doctor) run(ctx context.Context, cfg *Config, w io.Writer) bool {
	d.w = w
	for i := range cfg.Devices {
		if dev := &cfg.Devices[i]; dev.Port != "" || dev.USB != nil {
			d.serial(dev)
		}
	}
	var maxBytes int64
	if cfg.Bridge != nil {
		maxBytes = int64(cfg.Bridge.Buffer.MaxBytes)
	}
	d.dataDir(cfg.Gateway.DataDir, maxBytes)
	d.dataDirLock(cfg.Gateway.DataDir)
	d.secretFiles(cfg)
	d.clock()
	d.modbusTCP(ctx, cfg)
	if cfg.Bridge == nil {
		d.report(checkOK, "upstream", "no bridge section: nothing is forwarded")
	} else {
		before := d.fails
		d.upstream(ctx, &cfg.Bridge.Upstream)
		if d.fails == before { // reachable (and TLS verified): log in
			d.upstreamMQTT(ctx, cfg)
		}
	}
	return !d.failed
}

// doctorCurrentSubject is this process, or ServiceUser when running as root and
// that account exists (root can open anything; the service cannot).
func doctorCurrentSubject() doctorSubject {
	if os.Geteuid() == 0 {
		if s, err := doctorLookupSubject(ServiceUser); err == nil {
			return s
		}
	}
	s := doctorSubject{uid: os.Geteuid(), self: true}
	s.name = strconv.Itoa(s.uid)
	if u, err := user.LookupId(s.name); err == nil {
		s.name = u.Username
	}
	s.gids = append(s.gids, os.Getegid())
	if gs, err := os.Getgroups(); err == nil {
		s.gids = append(s.gids, gs...)
	}
	return s
}

func doctorLookupSubject(name string) (doctorSubject, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return doctorSubject{}, fmt.Errorf("user %s: %w", name, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return doctorSubject{}, fmt.Errorf("user %s: uid %q: %w", name, u.Uid, err)
	}
	s := doctorSubject{name: name, uid: uid}
	ids, err := u.GroupIds()
	if err != nil {
		return doctorSubject{}, fmt.Errorf("user %s: groups: %w", name, err)
	}
	for _, g := range append(ids, u.Gid) {
		if n, err := strconv.Atoi(g); err == nil {
			s.gids = append(s.gids, n)
		}
	}
	return s, nil
}

// may reports whether s has every permission in want (bits of 0o7: r=4,
// w=2, x=1) on a file with the given owner, group and mode, by the classic
// owner/group/other rule (ACLs are not consulted).
func (s doctorSubject) may(fi os.FileInfo, want uint32) bool {
	if s.uid == 0 {
		return true
	}
	st, okSys := fi.Sys().(*syscall.Stat_t)
	if !okSys {
		return false
	}
	perm := uint32(fi.Mode().Perm())
	switch {
	case int(st.Uid) == s.uid:
		perm >>= 6
	case slices.Contains(s.gids, int(st.Gid)):
		perm >>= 3
	}
	return perm&want == want
}

func doctorGroupName(gid uint32) string {
	if g, err := user.LookupGroupId(strconv.FormatUint(uint64(gid), 10)); err == nil {
		return g.Name
	}
	return strconv.FormatUint(uint64(gid), 10)
}

// serial checks that the device's serial port exists and that the subject
// may read and write it.
func (d *doctor) serial(dev *devices.DeviceConfig) {
	check := "serial " + dev.Name
	path, err := devices.ResolvePort(dev)
	if err != nil {
		d.report(checkFail, check, "%v", err)
		return
	}
	fi, err := os.Stat(path)
	if err != nil {
		d.report(checkFail, check, "%v", err)
		return
	}
	name := path
	if dev.Port != "" && dev.Port != path {
		name = dev.Port + " → " + path
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	if !d.subject.may(fi, 6) {
		hint := ""
		if st != nil {
			g := doctorGroupName(st.Gid)
			hint = fmt.Sprintf(" (owner uid %d, group %s, mode %v): add the user to group %s (adduser %s %s) and restart the service",
				st.Uid, g, fi.Mode().Perm(), g, d.subject.name, g)
		}
		d.report(checkFail, check, "%s is not readable and writable by user %s%s", name, d.subject.name, hint)
		return
	}
	if d.subject.self && d.subject.uid != 0 {
		if err := unix.Access(path, unix.R_OK|unix.W_OK); err != nil {
			d.report(checkFail, check, "%s: access for user %s: %v", name, d.subject.name, err)
			return
		}
	}
	switch {
	case fi.Mode()&os.ModeCharDevice == 0:
		d.report(checkWarn, check, "%s is not a character device", name)
	case dev.Port != "" && devices.UnstablePortName(dev.Port):
		d.report(checkWarn, check, "%s is read-write for user %s, but its number depends on plug order: use /dev/serial/by-id/... or usb: {vid, pid, serial}", name, d.subject.name)
	default:
		d.report(checkOK, check, "%s is read-write for user %s", name, d.subject.name)
	}
}

// dataDir checks that dir is (or can be created) writable by the subject and
// has room for the buffer.
func (d *doctor) dataDir(dir string, bufferMax int64) {
	const check = "data dir"
	existing := dir
	for {
		if _, err := os.Stat(existing); err == nil || !errors.Is(err, os.ErrNotExist) {
			break
		}
		parent := filepath.Dir(existing)
		if parent == existing {
			break
		}
		existing = parent
	}
	fi, err := os.Stat(existing)
	if err != nil {
		d.report(checkFail, check, "%s: %v", dir, err)
		return
	}
	if !fi.IsDir() {
		d.report(checkFail, check, "%s is not a directory", existing)
		return
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(existing, &sfs); err != nil {
		d.report(checkFail, check, "statfs %s: %v", existing, err)
		return
	}
	writable := d.subject.may(fi, 3) && sfs.Flags&unix.ST_RDONLY == 0
	if writable && d.subject.self {
		writable = doctorTryWrite(existing) == nil
	}
	switch {
	case existing != dir && d.subject.name == ServiceUser && withinDir(dir, serviceStateDir):
		// Right after the package is installed: the unit creates it.
		d.report(checkWarn, check, "%s does not exist yet; systemd creates it for user %s when the service starts (StateDirectory=fieldgate)", dir, d.subject.name)
	case !writable:
		d.report(checkFail, check, "%s is not writable by user %s", existing, d.subject.name)
		return
	case existing != dir:
		d.report(checkWarn, check, "%s does not exist; %s is writable by user %s, so it can be created", dir, existing, d.subject.name)
	case d.subject.name == ServiceUser && !withinDir(dir, serviceStateDir):
		// The unit's ProtectSystem=strict leaves only its StateDirectory writable.
		d.report(checkWarn, check, "%s is writable by user %s, but the systemd unit (ProtectSystem=strict) only lets the service write %s: add ReadWritePaths=%s in a drop-in or use %s", dir, d.subject.name, serviceStateDir, dir, serviceStateDir)
	default:
		d.report(checkOK, check, "%s is writable by user %s", dir, d.subject.name)
	}

	free := int64(sfs.Bavail) * int64(sfs.Bsize)
	switch {
	case free < doctorMinFree:
		d.report(checkWarn, "disk space", "%s free in %s: below 1 GiB", doctorBytes(free), existing)
	case bufferMax > 0 && free < 2*bufferMax:
		d.report(checkWarn, "disk space", "%s free in %s: below twice the buffer's max_bytes (%s)", doctorBytes(free), existing, doctorBytes(bufferMax))
	default:
		d.report(checkOK, "disk space", "%s free in %s", doctorBytes(free), existing)
	}
}

// serviceStateDir is the unit's StateDirectory.
const serviceStateDir = "/var/lib/fieldgate"

// withinDir reports whether path is dir or below it (both cleaned, absolute).
func withinDir(path, dir string) bool {
	abs, err := filepath.Abs(path)
	if err != nil {
		return false
	}
	rel, err := filepath.Rel(dir, abs)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

func doctorTryWrite(dir string) error {
	f, err := os.CreateTemp(dir, ".fieldgate-doctor-*")
	if err != nil {
		return err
	}
	name := f.Name()
	_, werr := f.Write([]byte("ok"))
	cerr := f.Close()
	rerr := os.Remove(name)
	return errors.Join(werr, cerr, rerr)
}

func doctorBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d bytes", n)
}

// clock checks that the clock is plausible and NTP-synchronised.
func (d *doctor) clock() {
	const check = "clock"
	now := d.now()
	if now.Before(doctorClockFloor) {
		d.report(checkFail, check, "%s is before %s: the clock is wrong (no RTC and no NTP yet?); TLS certificates will not verify", now.UTC().Format(time.RFC3339), doctorClockFloor.Format("2006-01-02"))
		return
	}
	synced, err := d.synced()
	switch {
	case err != nil:
		d.report(checkWarn, check, "cannot tell whether the clock is synchronised: %v", err)
	case !synced:
		d.report(checkWarn, check, "%s, not synchronised (NTP): readings carry wrong timestamps until it is (check systemd-timesyncd or chrony)", now.UTC().Format(time.RFC3339))
	default:
		d.report(checkOK, check, "%s, synchronised", now.UTC().Format(time.RFC3339))
	}
}

// timesyncFlag is created by systemd-timesyncd once it has synchronised.
const timesyncFlag = "/run/systemd/timesync/synchronized"

// ClockSynchronized reports whether the system clock is synchronised to a
// time source. A Raspberry Pi has no RTC: until this is true, its clock may
// be far off. It asks, in order: systemd-timesyncd's flag file
// (/run/systemd/timesync/synchronized: true when present),
// `timedatectl show -p NTPSynchronized --value` where systemd answers, and
// the kernel (adjtimex: STA_UNSYNC clear; under the unit's ProtectClock=yes
// adjtimex is denied, hence the first two). It may run one process per call,
// so poll it (every 30s or so until true), not per reading. Safe for
// concurrent use.
func ClockSynchronized() (bool, error) {
	if _, err := os.Stat(timesyncFlag); err == nil {
		return true, nil
	}
	if _, err := exec.LookPath("timedatectl"); err == nil {
		var out bytes.Buffer
		cmd := exec.Command("timedatectl", "show", "-p", "NTPSynchronized", "--value")
		cmd.Stdout = &out
		if cmd.Run() == nil {
			switch strings.TrimSpace(out.String()) {
			case "yes":
				return true, nil
			case "no":
				return false, nil
			}
		}
	}
	var tx unix.Timex
	if _, err := unix.Adjtimex(&tx); err != nil {
		return false, fmt.Errorf("adjtimex: %w", err)
	}
	return tx.Status&unix.STA_UNSYNC == 0, nil
}

func hintSuffix(h string) string {
	if h == "" {
		return ""
	}
	return ": " + h
}

// doctorUpstreamAddr returns host:port of the upstream URL and whether the
// connection uses TLS.
func doctorUpstreamAddr(raw string) (hostport, host string, useTLS bool, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", false, fmt.Errorf("url %q: %w", raw, err)
	}
	var port string
	switch u.Scheme {
	case "mqtt", "tcp":
		port = "1883"
	case "mqtts", "ssl", "tls":
		port, useTLS = "8883", true
	case "ws":
		port = "80"
	case "wss":
		port, useTLS = "443", true
	default:
		return "", "", false, fmt.Errorf("url %q: unknown scheme %q", raw, u.Scheme)
	}
	if p := u.Port(); p != "" {
		port = p
	}
	return net.JoinHostPort(u.Hostname(), port), u.Hostname(), useTLS, nil
}

// upstream dials the upstream broker and, for TLS schemes, verifies its
// certificate as the bridge would.
func (d *doctor) upstream(ctx context.Context, up *bridge.UpstreamConfig) {
	addr, host, useTLS, err := doctorUpstreamAddr(up.URL)
	if err != nil {
		d.report(checkFail, "upstream", "%v", err)
		return
	}
	if useTLS && up.TLS.CAFile == "" && d.roots == nil {
		// Load the system roots before the connect deadline starts.
		if pool, err := x509.SystemCertPool(); err == nil {
			d.roots = pool
		}
	}
	timeout := up.ConnectTimeout
	if timeout <= 0 {
		timeout = doctorDialLimit
	}
	timeout = min(timeout, doctorMaxDial)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		d.report(checkFail, "upstream", "%s: %v%s", addr, err, hintSuffix(bridge.ConnectHint(err)))
		return
	}
	defer conn.Close()
	d.report(checkOK, "upstream", "%s reachable (TCP connect %v)", addr, time.Since(start).Round(time.Millisecond))
	if !useTLS {
		return
	}
	d.upstreamTLS(ctx, conn, host, &up.TLS)
}

func (d *doctor) upstreamTLS(ctx context.Context, conn net.Conn, host string, tc *bridge.TLSConfig) {
	const check = "upstream tls"
	conf := &tls.Config{ServerName: host, RootCAs: d.roots, Time: d.now}
	if tc.ServerName != "" {
		conf.ServerName = tc.ServerName
	}
	if tc.CAFile != "" {
		pem, err := os.ReadFile(tc.CAFile)
		if err != nil {
			d.report(checkFail, check, "ca_file: %v", err)
			return
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			d.report(checkFail, check, "ca_file %s: no PEM certificate in it", tc.CAFile)
			return
		}
		conf.RootCAs = pool
	}
	if tc.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(tc.CertFile, tc.KeyFile)
		if err != nil {
			d.report(checkFail, check, "client certificate: %v", err)
			return
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	if tc.InsecureSkipVerify {
		conf.InsecureSkipVerify = true
	}
	tconn := tls.Client(conn, conf)
	if err := tconn.HandshakeContext(ctx); err != nil {
		d.report(checkFail, check, "handshake with %s: %v%s", conf.ServerName, err, hintSuffix(bridge.ConnectHint(fmt.Errorf("tls handshake: %w", err))))
		return
	}
	certs := tconn.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		d.report(checkFail, check, "%s sent no certificate", conf.ServerName)
		return
	}
	leaf := certs[0]
	left := leaf.NotAfter.Sub(d.now())
	expiry := leaf.NotAfter.UTC().Format("2006-01-02")
	switch {
	case tc.InsecureSkipVerify:
		d.report(checkWarn, check, "insecure_skip_verify is set: the certificate of %s (%q, expires %s) is not verified", conf.ServerName, leaf.Subject.CommonName, expiry)
	case left < doctorCertExpiry:
		d.report(checkWarn, check, "certificate of %s expires %s (in %d days)", conf.ServerName, expiry, int(left.Hours()/24))
	default:
		d.report(checkOK, check, "certificate of %s valid until %s, issued by %q", conf.ServerName, expiry, leaf.Issuer.CommonName)
	}
}
