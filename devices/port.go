package devices

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"

	"go.bug.st/serial"
	"go.bug.st/serial/enumerator"
)

// ErrPortNotFound means the configured serial adapter is not present now
// (unplugged, or not enumerated yet). Callers retry with backoff.
var ErrPortNotFound = errors.New("serial port not found")

// unstableName matches kernel names that change with plug order.
var unstableName = regexp.MustCompile(`^/dev/tty(USB|ACM)[0-9]+$`)

// UnstablePortName reports whether port names a device node whose number
// depends on plug order (/dev/ttyUSB0, /dev/ttyACM1), which should be
// replaced by /dev/serial/by-id/... or a `usb:` identity.
func UnstablePortName(port string) bool { return unstableName.MatchString(port) }

// ResolvePort returns the device node to open for cfg: the `port:` path
// with symlinks (/dev/serial/by-id/...) resolved, or the node of the USB
// adapter matching `usb: {vid, pid, serial}`. It is called again after every
// unplug, so an adapter that comes back under another ttyUSBn is found.
// It returns an error wrapping ErrPortNotFound when the adapter is absent.
func ResolvePort(cfg *DeviceConfig) (string, error) {
	if cfg.USB == nil {
		path, err := filepath.EvalSymlinks(cfg.Port)
		if err != nil {
			return "", fmt.Errorf("port %s: %w (%v)", cfg.Port, ErrPortNotFound, err)
		}
		return path, nil
	}
	ports, err := enumerator.GetDetailedPortsList()
	if err != nil {
		return "", fmt.Errorf("enumerate usb serial ports: %w", err)
	}
	for _, p := range ports {
		if p.IsUSB && matchUSB(cfg.USB, p) {
			return p.Name, nil
		}
	}
	return "", fmt.Errorf("usb vid %s pid %s serial %q: %w", cfg.USB.VID, cfg.USB.PID, cfg.USB.Serial, ErrPortNotFound)
}

func matchUSB(want *USBConfig, p *enumerator.PortDetails) bool {
	return strings.EqualFold(want.VID, p.VID) &&
		strings.EqualFold(want.PID, p.PID) &&
		(want.Serial == "" || want.Serial == p.SerialNumber)
}

// PortHint says what to check when a serial port cannot be opened, or ""
// when err is not about the port.
func PortHint(err error) string {
	var pe *serial.PortError
	code := serial.PortErrorCode(-1)
	if errors.As(err, &pe) {
		code = pe.Code()
	}
	switch {
	case errors.Is(err, ErrPortNotFound), code == serial.PortNotFound:
		return "is the adapter plugged in? `ls -l /dev/serial/by-id/` lists the names to use in port:"
	case errors.Is(err, fs.ErrPermission), code == serial.PermissionDenied:
		return "the gateway's user may not open the port: it needs group dialout (the unit has SupplementaryGroups=dialout; by hand: usermod -aG dialout USER)"
	case errors.Is(err, syscall.EBUSY), code == serial.PortBusy:
		return "another program holds the port (ModemManager or a serial console?)"
	}
	return ""
}
