package modbus

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/fieldgate/fieldgate/devices"
)

// serialRS485 is the kernel's struct serial_rs485 (include/uapi/linux/serial.h).
type serialRS485 struct {
	Flags              uint32
	DelayRTSBeforeSend uint32 // milliseconds
	DelayRTSAfterSend  uint32 // milliseconds
	Padding            [5]uint32
}

const (
	serRS485Enabled      = 1 << 0
	serRS485RTSOnSend    = 1 << 1
	serRS485RTSAfterSend = 1 << 2
	serRS485RXDuringTX   = 1 << 4
)

// setRS485 switches the UART behind path to RS-485 mode with TIOCSRS485.
// The setting belongs to the UART and survives the close of this
// descriptor, so it is applied on its own descriptor before the port is
// opened for I/O. Drivers (and ptys) without RS-485 support return ENOTTY.
func setRS485(path string, c *devices.RS485) error {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s for TIOCSRS485: %w", path, err)
	}
	defer unix.Close(fd)
	r := serialRS485{
		Flags:              serRS485Enabled,
		DelayRTSBeforeSend: uint32(c.DelayRTSBeforeSend.Milliseconds()),
		DelayRTSAfterSend:  uint32(c.DelayRTSAfterSend.Milliseconds()),
	}
	if c.RTSHighDuringSend {
		r.Flags |= serRS485RTSOnSend
	}
	if c.RTSHighAfterSend {
		r.Flags |= serRS485RTSAfterSend
	}
	if c.RXDuringTX {
		r.Flags |= serRS485RXDuringTX
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TIOCSRS485, uintptr(unsafe.Pointer(&r))); errno != 0 {
		return fmt.Errorf("TIOCSRS485 on %s: %w", path, errno)
	}
	return nil
}
