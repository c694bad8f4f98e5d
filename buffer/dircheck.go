package buffer

import (
	"errors"
	"fmt"
	"os"
)

// ErrUnwritable is returned by Append when the store's directory cannot be
// written: the file system was remounted read-only (an SD card that went
// bad is remounted so by the kernel), or the directory was deleted or
// replaced under the running process. Nothing was stored. Writing anyway
// makes badger fail an assertion and end the process, so appends are
// refused, like on a full disk, until the directory is writable again
// (Unwritable says why meanwhile). A deleted directory does not come back:
// its files are gone, only a restart opens a new store.
var ErrUnwritable = errors.New("buffer: data directory not writable")

// dirID identifies the directory the store was opened in.
type dirID struct{ dev, ino uint64 }

// checkDir returns why the store's directory cannot be written now, or nil.
// It is q.checkDirFn when set (tests), else the platform's check.
func (q *Queue) checkDir() error {
	if q.checkDirFn != nil {
		return q.checkDirFn()
	}
	return dirProblem(q.dir, q.dirID)
}

// noteDir logs when appends start or stop being refused because the
// directory cannot be written, once each way.
func (q *Queue) noteDir(problem error) {
	q.mu.Lock()
	was := q.unwritable
	q.unwritable = problem
	q.mu.Unlock()
	switch {
	case problem != nil && was == nil:
		q.log.Error("buffer: data directory cannot be written: refusing new records until it can (acknowledged records are kept)",
			"dir", q.dir, "reason", problem.Error())
	case problem == nil && was != nil:
		q.log.Info("buffer: data directory writable again; accepting records", "dir", q.dir)
	}
}

// Unwritable returns why appends are refused because the data directory
// cannot be written, or nil. Safe for concurrent use.
func (q *Queue) Unwritable() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.unwritable
}

func unwritableErr(dir string, problem error) error {
	return fmt.Errorf("buffer: append: %s: %v: %w", dir, problem, ErrUnwritable)
}

// statDir returns the identity of dir.
func statDir(dir string) (dirID, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return dirID{}, err
	}
	return fileID(fi), nil
}
