package buffer

import (
	"errors"
	"fmt"
	"unsafe"
)

// ErrUnsupportedPlatform is returned by Open on 32-bit platforms: badger
// v4.9.6 corrupts data on 386 and ARMv7 (use a 64-bit OS, e.g. arm64
// Raspberry Pi OS).
var ErrUnsupportedPlatform = errors.New("buffer: unsupported platform: badger needs a 64-bit OS (386 and ARMv7 corrupt data)")

// checkPlatform refuses pointer sizes other than 8 bytes.
func checkPlatform(ptrSize uintptr) error {
	if ptrSize != 8 {
		return fmt.Errorf("%d-bit pointers: %w", ptrSize*8, ErrUnsupportedPlatform)
	}
	return nil
}

func platformError() error { return checkPlatform(unsafe.Sizeof(uintptr(0))) }
