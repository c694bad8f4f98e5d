//go:build unix

package buffer

import (
	"io/fs"
	"syscall"
)

// diskUsage is the space a file occupies on disk: badger preallocates its
// logs sparsely, so their apparent size says little.
func diskUsage(fi fs.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return fi.Size()
}
