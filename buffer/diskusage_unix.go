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

// freeSpace is the space available to this user on the file system holding
// dir.
func freeSpace(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}
