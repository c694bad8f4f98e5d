// Package durable makes directory changes survive a power cut.
//
// A power cut keeps only what was fsync'd: the data of a file as of its
// last fsync, and a directory entry (a file or directory created, renamed
// or removed) as of the last fsync of its directory. ext4's journal usually
// commits directory changes within seconds anyway; other file systems and
// SD cards need not, so every store of fieldgate syncs the directories it
// changes.
package durable

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// MkdirAll creates dir and any missing parents, like os.MkdirAll, and
// makes every directory it created durable by syncing its parent.
func MkdirAll(dir string, perm fs.FileMode) error {
	dir = filepath.Clean(dir)
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("mkdir %s: not a directory", dir)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := MkdirAll(parent, perm); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, perm); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return SyncDir(parent)
}

// Rename renames oldpath to newpath and syncs the directories involved.
func Rename(oldpath, newpath string) error {
	if err := os.Rename(oldpath, newpath); err != nil {
		return err
	}
	from, to := filepath.Dir(oldpath), filepath.Dir(newpath)
	if err := SyncDir(to); err != nil {
		return err
	}
	if from != to {
		return SyncDir(from)
	}
	return nil
}

// SyncDir fsyncs a directory, making its entries durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	serr := d.Sync()
	cerr := d.Close()
	if serr != nil {
		return fmt.Errorf("sync directory %s: %w", dir, serr)
	}
	return cerr
}
