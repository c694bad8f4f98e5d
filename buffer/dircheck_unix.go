//go:build linux

package buffer

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
)

const stRdonly = 0x1 // ST_RDONLY in statfs(2) f_flags

func fileID(fi fs.FileInfo) dirID {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return dirID{dev: uint64(st.Dev), ino: st.Ino}
	}
	return dirID{}
}

// dirProblem reports a directory that is gone, replaced (another inode at
// the path) or on a read-only file system.
func dirProblem(dir string, id dirID) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if id != (dirID{}) && fileID(fi) != id {
		return errors.New("the directory was deleted and another one created in its place")
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return err
	}
	if st.Flags&stRdonly != 0 {
		return syscall.EROFS
	}
	return nil
}
