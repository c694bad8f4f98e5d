//go:build fieldgate_faults

package buffer

import (
	"os"
	"syscall"
)

// injectedSyncFault makes the store's syncs fail with EIO, as a dying SD
// card's do, while the file <dir>.inject-eio exists. Only builds tagged
// fieldgate_faults have it: the end-to-end tests build the binary with
// that tag to check what the gateway does when its buffer fails.
func injectedSyncFault() func(dir string) error {
	return func(dir string) error {
		if _, err := os.Stat(dir + ".inject-eio"); err != nil {
			return nil
		}
		return &os.PathError{Op: "fdatasync", Path: dir, Err: syscall.EIO}
	}
}
