package gateway

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// prefixed wraps err with "section: " unless its message already starts
// with that section's name (the packages prefix their own errors), so the
// log never reads "broker: broker: …".
func prefixed(section string, err error) error {
	if strings.HasPrefix(err.Error(), section) {
		return err
	}
	return fmt.Errorf("%s: %w", section, err)
}

// wellKnownPorts are programs commonly found on a gateway's host, by the
// TCP port they listen on.
var wellKnownPorts = map[int]string{
	1883: "an MQTT broker (Debian's mosquitto package starts one on 1883: systemctl disable --now mosquitto)",
	8883: "an MQTT broker over TLS (mosquitto?)",
	9100: "node_exporter",
	9180: "another fieldgate",
	8080: "a web server",
	80:   "a web server",
	443:  "a web server",
	502:  "a Modbus TCP server",
}

// Hint says what to do about an error that stopped the gateway, or "" when
// there is nothing to add to its message. A port already in use is
// explained with the program that holds it (found through /proc when this
// process may look) or the one that usually does.
func Hint(err error) string {
	if !errors.Is(err, syscall.EADDRINUSE) {
		if errors.Is(err, syscall.EACCES) && strings.Contains(err.Error(), "bind") {
			return "ports below 1024 need root or CAP_NET_BIND_SERVICE (AmbientCapabilities= in the unit)"
		}
		return ""
	}
	var op *net.OpError
	port := 0
	if errors.As(err, &op) && op.Addr != nil {
		if ta, ok := op.Addr.(*net.TCPAddr); ok {
			port = ta.Port
		}
	}
	if port == 0 {
		return "the address is already in use by another program (find it with: ss -ltnp)"
	}
	if owner := portOwner(port); owner != "" {
		return fmt.Sprintf("port %d is already in use by %s: stop it or choose another port", port, owner)
	}
	if who, ok := wellKnownPorts[port]; ok {
		return fmt.Sprintf("port %d is already in use, usually by %s (find it with: ss -ltnp 'sport = :%d')", port, who, port)
	}
	return fmt.Sprintf("port %d is already in use by another program (find it with: ss -ltnp 'sport = :%d')", port, port)
}

// portOwner names the process listening on TCP port, as "mosquitto (pid
// 123)", from /proc; "" when it cannot be told (another user's process
// without root).
func portOwner(port int) string {
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != "0A" { // LISTEN
				continue
			}
			_, hexPort, ok := strings.Cut(fields[1], ":")
			if p, err := strconv.ParseUint(hexPort, 16, 16); ok && err == nil && int(p) == port {
				inodes["socket:["+fields[9]+"]"] = true
			}
		}
		fh.Close()
	}
	if len(inodes) == 0 {
		return ""
	}
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range fds {
		link, err := os.Readlink(fd)
		if err != nil || !inodes[link] {
			continue
		}
		pid := strings.Split(fd, "/")[2]
		comm, err := os.ReadFile(filepath.Join("/proc", pid, "comm"))
		if err != nil {
			return "pid " + pid
		}
		return fmt.Sprintf("%s (pid %s)", strings.TrimSpace(string(comm)), pid)
	}
	return ""
}
