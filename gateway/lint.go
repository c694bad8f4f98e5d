package gateway

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/fieldgate/fieldgate/bridge"
	"github.com/fieldgate/fieldgate/devices"
)

// sharedHostNames are host names that images ship with: many gateways
// end up with the same one, hence the same upstream client id.
var sharedHostNames = []string{
	"raspberrypi", "raspberry", "pi", "localhost", "localhost-localdomain", "ubuntu",
	"debian", "dietpi", "orangepi", "nanopi", "rockpi", "armbian", "beaglebone",
	"openwrt", "revpi", "fieldgate",
}

// fileProblems opens every `*_file` key written in the file and reports
// each one that cannot be read: the gateway would fail at start (or at the
// first upstream connection) with it, so `check` fails now.
func fileProblems(pos *positions) []Problem {
	var probs []Problem
	for path, name := range pos.scalars {
		if !strings.HasSuffix(path, "_file") || name == "" {
			continue
		}
		if msg := unreadable(name); msg != "" {
			probs = append(probs, Problem{Path: path, Line: pos.line(path), Msg: msg})
		}
	}
	sort.Slice(probs, func(i, j int) bool { return probs[i].Line < probs[j].Line })
	return probs
}

// unreadable returns why the file name cannot be read, or "".
func unreadable(name string) string {
	f, err := os.Open(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Sprintf("%s does not exist", name)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Sprintf("%s cannot be read: permission denied (it must be readable by the user the gateway runs as, %s under systemd)", name, ServiceUser)
	case err != nil:
		return fmt.Sprintf("%s cannot be opened: %v", name, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		return fmt.Sprintf("%s is a directory, not a file", name)
	}
	if _, err := f.Read(make([]byte, 1)); err != nil && err != io.EOF {
		return fmt.Sprintf("%s cannot be read: %v", name, err)
	}
	return ""
}

// sizeInBits matches a size written with a lowercase b ("32Mb"), which
// reads as bits but is taken as bytes.
var sizeInBits = regexp.MustCompile(`^\s*[0-9.]+\s*[kKmMgGtT]b\s*$`)

// serialByNumber matches serial port names whose number depends on the order
// adapters were plugged in.
var serialByNumber = regexp.MustCompile(`^/dev/tty(USB|ACM)[0-9]+$`)

// lint returns the warnings of a valid configuration: settings that are
// accepted but almost certainly not what was meant. cfg has defaults
// applied; pos is where each key was written.
func lint(cfg *Config, pos *positions) []Problem {
	var warns []Problem
	add := func(path, format string, args ...any) {
		warns = append(warns, Problem{Path: path, Line: pos.line(path), Msg: fmt.Sprintf(format, args...)})
	}
	if _, set := pos.lines["gateway.id"]; !set && slices.Contains(sharedHostNames, strings.ToLower(cfg.Gateway.ID)) {
		add("gateway.id", "not set, so it is the host name %q, which many installed images share: two gateways with the same id take over each other's upstream session (set a unique gateway.id)", cfg.Gateway.ID)
	}

	auth := cfg.Broker.Auth
	users := map[string]bool{}
	for _, u := range auth.Users {
		users[u.Username] = true
	}
	if !auth.Anonymous && len(auth.Users) == 0 {
		add("broker.auth", "anonymous is off and there are no users: no MQTT client can connect (add broker.auth.users, or set anonymous: true)")
	}
	for i, r := range auth.ACL {
		if r.Username != "*" && !strings.Contains(r.Username, "{") && !users[r.Username] {
			add(fmt.Sprintf("broker.auth.acl[%d].username", i), "user %q is not in broker.auth.users: this rule applies to no one", r.Username)
		}
	}

	for i, d := range cfg.Devices {
		at := fmt.Sprintf("devices[%d]", i)
		if serialByNumber.MatchString(d.Port) {
			add(at+".port", "%s is numbered in plug order: after a reboot or replug it can be another adapter (use /dev/serial/by-id/..., or usb: {vid, pid, serial})", d.Port)
		}
		for j, p := range d.Points {
			if d.Driver == "modbus" && p.Address != nil {
				if base, ok := registerNumberBase(p.Table, *p.Address); ok {
					add(fmt.Sprintf("%s.points[%d].address", at, j), "%d looks like a Modbus register number (%dxxxx); fieldgate takes the 0-based address, so it is probably address: %d (table: %s)", *p.Address, base/10000, *p.Address-base-1, p.Table)
				}
			}
			if p.Deadband == 0 && p.DeadbandPercent == 0 {
				continue
			}
			if (p.Heartbeat == nil || *p.Heartbeat == 0) && (p.Retain == nil || !*p.Retain) {
				add(fmt.Sprintf("%s.points[%d].deadband", at, j), "a deadband with neither heartbeat nor retain: an unchanged value is never published again, so a subscriber that starts later never sees it (set heartbeat: 5m or retain: true)")
			}
		}
	}

	if b := cfg.Bridge; b != nil && len(b.Forward) > 0 {
		for i, d := range cfg.Devices {
			if topic, ok := unforwarded(cfg.Gateway.ID, d, b.Forward); ok {
				add(fmt.Sprintf("devices[%d].topic", i), "no bridge.forward filter matches this device's topics (e.g. %s): its readings stay on this gateway", topic)
			}
		}
	}
	if b := cfg.Bridge; b != nil {
		t := b.Upstream.TLS
		if u, err := url.Parse(b.Upstream.URL); err == nil && (u.Scheme == "mqtt" || u.Scheme == "ws") &&
			(t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.InsecureSkipVerify) {
			add("bridge.upstream.tls", "set, but the URL is %s:// (no TLS): the connection is not encrypted and these settings are ignored (use %ss://)", u.Scheme, u.Scheme)
		}
	}

	for path, v := range pos.scalars {
		if sizeInBits.MatchString(v) {
			add(path, "%q is read as bytes (%sB); a lowercase b means bits elsewhere: write MB or MiB to say bytes", v, strings.TrimSpace(v[:len(v)-1]))
		}
	}
	sort.SliceStable(warns, func(i, j int) bool { return warns[i].Line < warns[j].Line })
	return warns
}

// registerNumberBase reports whether address is written the way register
// maps number registers (40001 = first holding register, 30001 = first
// input register) and returns that base (40000 or 30000).
func registerNumberBase(table string, address int) (int, bool) {
	switch {
	case table == "holding" && address >= 40001 && address <= 49999:
		return 40000, true
	case table == "input" && address >= 30001 && address <= 39999:
		return 30000, true
	}
	return 0, false
}

// unforwarded returns a topic of device d and true when no forward
// route's filter matches any of its points' topics.
func unforwarded(gateway string, d devices.DeviceConfig, routes []bridge.ForwardRoute) (string, bool) {
	first := ""
	for _, p := range d.Points {
		topic := expandTopic(p.Topic, gateway, d, p.Name)
		if first == "" {
			first = topic
		}
		for _, r := range routes {
			if filterMatches(r.Filter, topic) {
				return "", false
			}
		}
	}
	return first, first != ""
}

var templateVar = regexp.MustCompile(`\{([A-Za-z0-9_]+)\}`)

func expandTopic(tmpl, gateway string, d devices.DeviceConfig, point string) string {
	return templateVar.ReplaceAllStringFunc(tmpl, func(m string) string {
		switch name := m[1 : len(m)-1]; name {
		case "gateway":
			return gateway
		case "device":
			return d.Name
		case "point":
			return point
		default:
			return d.Vars[name]
		}
	})
}

// filterMatches is MQTT topic filter matching ('+' one level, '#' the
// rest, '$' topics only by filters that name them).
func filterMatches(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && !strings.HasPrefix(filter, "$") {
		return false
	}
	f, t := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, part := range f {
		switch {
		case part == "#":
			return true
		case i >= len(t):
			return false
		case part != "+" && part != t[i]:
			return false
		}
	}
	return len(f) == len(t)
}
