//go:build !linux

package modbus

import (
	"errors"

	"github.com/fieldgate/fieldgate/devices"
)

// setRS485 is only implemented on Linux.
func setRS485(path string, c *devices.RS485) error {
	return errors.New("kernel RS-485 mode is only supported on Linux")
}
