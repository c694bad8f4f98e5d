//go:build !unix

package buffer

import (
	"errors"
	"io/fs"
)

// diskUsage is the apparent size of a file outside Unix.
func diskUsage(fi fs.FileInfo) int64 { return fi.Size() }

// freeSpace is unknown outside Unix: appends are never refused for it.
func freeSpace(dir string) (uint64, error) { return 0, errors.ErrUnsupported }
