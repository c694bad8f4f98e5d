// Package crashfs is a FUSE file system for tests that simulates a power
// cut: it passes every operation through to a backing directory, remembers
// what a power loss could not take away, and on [FS.Cut] forgets the rest.
//
// # What it models
//
// The model is strict POSIX, the weakest guarantee a program may rely on
// (what ext4 data=writeback, XFS, F2FS or a cheap SD card controller give
// at worst), not ext4 data=ordered:
//
//   - A regular file's data and size are durable as of its last fsync or
//     fdatasync (the two are the same here; msync(MS_SYNC) reaches the file
//     system as an fsync too). Writes since then are lost at a cut, also
//     the ones made through a shared writable mmap: the kernel sends a
//     mapping's dirty pages to the file system as ordinary writes when it
//     writes them back (at fsync/msync of that file, or whenever it
//     chooses); only an fsync makes them durable.
//   - A directory entry (creation, rename in or out, removal, the
//     replacement of a file by a rename over it) is durable as of the last
//     fsync of its directory. An fsync of a directory makes the directory's
//     whole current listing durable, nothing else: the data of the files in
//     it stays as of their own last fsync (never synced: empty), a new
//     subdirectory is empty until it is synced itself. A rename between two
//     directories is durable on each side when that side's directory is
//     synced, so after a cut the file may have both names or neither.
//   - Nothing unsynced survives. Real hardware may also write back some
//     unsynced data before the cut, in any order, and may tear a sector;
//     that is not modelled: the durable state after a cut is always
//     exactly the state as of the syncs, which is one of the states a power
//     cut can leave, and the one that catches a missing or misordered
//     fsync.
//   - Metadata other than the name, type, size and data (permissions,
//     times, owners, extended attributes) is not tracked: after a cut a
//     file has the permissions it had when its directory was last synced.
//     Hard links are kept (an inode with several durable names is
//     recreated once). Special files are not supported.
//
// # How
//
// The live tree is a directory under the work directory given to [Mount].
// Every inode (identified by its backing inode number, which cannot be
// reused while the file system runs because removed files are moved to a
// graveyard instead of being deleted) has a shadow copy of its durable
// data, brought up to date at each fsync by copying the byte range written
// since the previous one, and every directory has its durable listing
// (name → inode, type), replaced at each directory fsync. [FS.Cut]
// freezes the file system: from then on every operation fails with EIO and
// nothing reaches the durable state, so a process still running cannot
// make anything durable (kill it right after). [FS.Remount] unmounts,
// rebuilds a fresh live tree from the durable state and mounts it again at
// the same place.
//
// An FS is safe for concurrent use. It needs root (it mounts with mount(2)
// directly) and /dev/fuse. The process that serves the file system must not
// map its files (badger does): a page fault on a FUSE file blocks a thread
// the Go runtime cannot stop, its garbage collector then waits for that
// thread while the request it waits for can no longer be served, and the
// process hangs. Run what uses the file system in another process.
package crashfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// FS is a mounted crash-simulating file system.
type FS struct {
	mountpoint string
	work       string

	frozen atomic.Bool
	gen    int
	server *fuse.Server

	mu      sync.Mutex
	live    string // the backing directory of the live tree
	grave   string // removed inodes, kept so that their numbers are not reused
	graveN  uint64
	rootIno uint64
	// dirs holds the durable listing of every directory inode that has
	// one (a directory never synced is empty after a cut).
	dirs map[uint64]map[string]entry
	// files holds what changed in each regular file since its last fsync.
	files map[uint64]*dirty
	// shadows holds the inodes that have a shadow copy of durable data.
	shadows map[uint64]bool
	stats   Stats
}

// Stats counts what the file system saw, for tests and logs.
type Stats struct {
	FileSyncs, DirSyncs, Cuts int
}

type entry struct {
	ino    uint64
	mode   uint32 // type and permission bits
	target string // a symbolic link's target
}

// dirty is the byte range [lo, hi) written since the last fsync.
type dirty struct {
	lo, hi int64
	set    bool
}

func (d *dirty) add(lo, hi int64) {
	if hi <= lo {
		return
	}
	if !d.set {
		d.lo, d.hi, d.set = lo, hi, true
		return
	}
	d.lo, d.hi = min(d.lo, lo), max(d.hi, hi)
}

// Mount mounts a crash-simulating file system at mountpoint (an existing
// empty directory) whose live tree and durable copies are kept under work
// (an existing directory on a local file system, not under mountpoint). The
// tree starts empty and durable. The caller must Unmount it.
func Mount(mountpoint, work string) (*FS, error) {
	c := &FS{mountpoint: mountpoint, work: work}
	for _, d := range []string{c.shadowDir(), filepath.Join(work, "live-0")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("crashfs: %w", err)
		}
	}
	c.live = filepath.Join(work, "live-0")
	if err := c.resetState(); err != nil {
		return nil, err
	}
	if err := c.mount(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *FS) shadowDir() string { return filepath.Join(c.work, "shadow") }

func (c *FS) shadowPath(ino uint64) string {
	return filepath.Join(c.shadowDir(), strconv.FormatUint(ino, 10))
}

// resetState makes the whole live tree (as it is on the backing file
// system) the durable state, with a fresh graveyard. Called with nothing
// mounted.
func (c *FS) resetState() error {
	c.grave = c.live + ".grave"
	if err := os.MkdirAll(c.grave, 0o755); err != nil {
		return fmt.Errorf("crashfs: %w", err)
	}
	c.dirs = make(map[uint64]map[string]entry)
	c.files = make(map[uint64]*dirty)
	if c.shadows == nil {
		c.shadows = make(map[uint64]bool)
	}
	var st unix.Stat_t
	if err := unix.Lstat(c.live, &st); err != nil {
		return fmt.Errorf("crashfs: %w", err)
	}
	c.rootIno = st.Ino
	return c.snapshotTree(c.live, st.Ino)
}

// snapshotTree records dir (inode ino) and everything under it as durable.
// Files that already have a shadow (made by rebuild) keep it.
func (c *FS) snapshotTree(dir string, ino uint64) error {
	listing, err := readListing(dir)
	if err != nil {
		return err
	}
	c.dirs[ino] = listing
	for name, e := range listing {
		p := filepath.Join(dir, name)
		switch {
		case e.mode&unix.S_IFMT == unix.S_IFDIR:
			if err := c.snapshotTree(p, e.ino); err != nil {
				return err
			}
		case e.mode&unix.S_IFMT == unix.S_IFREG && !c.shadows[e.ino]:
			if err := copyFile(p, c.shadowPath(e.ino)); err != nil {
				return err
			}
			c.shadows[e.ino] = true
		}
	}
	return nil
}

// readListing reads a backing directory's entries.
func readListing(dir string) (map[string]entry, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("crashfs: %w", err)
	}
	out := make(map[string]entry, len(ents))
	for _, de := range ents {
		var st unix.Stat_t
		p := filepath.Join(dir, de.Name())
		if err := unix.Lstat(p, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return nil, fmt.Errorf("crashfs: %w", err)
		}
		e := entry{ino: st.Ino, mode: st.Mode}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			if e.target, err = os.Readlink(p); err != nil {
				return nil, fmt.Errorf("crashfs: %w", err)
			}
		}
		out[de.Name()] = e
	}
	return out, nil
}

func (c *FS) mount() error {
	var st syscall.Stat_t
	if err := syscall.Stat(c.live, &st); err != nil {
		return fmt.Errorf("crashfs: %w", err)
	}
	lr := &fs.LoopbackRoot{Path: c.live, Dev: uint64(st.Dev)}
	root := &node{LoopbackNode: &fs.LoopbackNode{RootData: lr}, c: c}
	lr.RootNode = root
	zero := time.Duration(0)
	server, err := fs.Mount(c.mountpoint, root, &fs.Options{
		EntryTimeout:    &zero,
		AttrTimeout:     &zero,
		NegativeTimeout: &zero,
		MountOptions: fuse.MountOptions{
			FsName:        "crashfs",
			Name:          "crashfs",
			DisableXAttrs: true,
			// mount(2) directly: needs root (or CAP_SYS_ADMIN), not fusermount.
			DirectMountStrict: true,
		},
	})
	if err != nil {
		return fmt.Errorf("crashfs: mount %s: %w", c.mountpoint, err)
	}
	c.server = server
	c.frozen.Store(false)
	return nil
}

// Mountpoint returns where the file system is mounted.
func (c *FS) Mountpoint() string { return c.mountpoint }

// Stats returns what the file system counted so far.
func (c *FS) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// Cut simulates a power cut: from now on every operation fails with EIO
// and the durable state no longer changes. Kill the processes using the
// file system, then call Remount.
func (c *FS) Cut() {
	c.mu.Lock() // waits for a sync in progress: it completed before the cut
	c.frozen.Store(true)
	c.stats.Cuts++
	c.mu.Unlock()
}

// Remount unmounts the file system (detaching it if files are still open),
// rebuilds the live tree from the durable state, as it would be found after
// the power came back, and mounts it again. Call it after Cut.
func (c *FS) Remount() error {
	if !c.frozen.Load() {
		return errors.New("crashfs: remount without a cut")
	}
	if err := c.unmount(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	oldLive, oldGrave := c.live, c.grave
	c.gen++
	c.live = filepath.Join(c.work, "live-"+strconv.Itoa(c.gen))
	if err := os.Mkdir(c.live, 0o755); err != nil {
		return fmt.Errorf("crashfs: %w", err)
	}
	shadows := make(map[uint64]bool)
	if err := c.rebuild(c.rootIno, c.live, make(map[uint64]string), shadows); err != nil {
		return err
	}
	// The shadows left are of inodes with no durable name.
	for ino := range c.shadows {
		if err := os.Remove(c.shadowPath(ino)); err != nil {
			return fmt.Errorf("crashfs: %w", err)
		}
	}
	c.shadows = shadows
	if err := c.fixShadows(); err != nil {
		return err
	}
	for _, d := range []string{oldLive, oldGrave} {
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("crashfs: %w", err)
		}
	}
	if err := c.resetState(); err != nil {
		return err
	}
	return c.mount()
}

// rebuild creates the durable contents of directory inode ino in the empty
// directory dir. made maps old inodes already created to their new path
// (hard links); shadows collects the new inodes that have a shadow.
func (c *FS) rebuild(ino uint64, dir string, made map[uint64]string, shadows map[uint64]bool) error {
	for name, e := range c.dirs[ino] {
		p := filepath.Join(dir, name)
		perm := os.FileMode(e.mode & 0o7777)
		switch e.mode & unix.S_IFMT {
		case unix.S_IFDIR:
			if err := os.Mkdir(p, perm); err != nil {
				return fmt.Errorf("crashfs: rebuild: %w", err)
			}
			if err := c.rebuild(e.ino, p, made, shadows); err != nil {
				return err
			}
		case unix.S_IFLNK:
			if err := os.Symlink(e.target, p); err != nil {
				return fmt.Errorf("crashfs: rebuild: %w", err)
			}
		case unix.S_IFREG:
			if first, ok := made[e.ino]; ok {
				if err := os.Link(first, p); err != nil {
					return fmt.Errorf("crashfs: rebuild: %w", err)
				}
				continue
			}
			made[e.ino] = p
			if c.shadows[e.ino] {
				if err := copyFile(c.shadowPath(e.ino), p); err != nil {
					return err
				}
			} else if err := os.WriteFile(p, nil, perm); err != nil {
				return fmt.Errorf("crashfs: rebuild: %w", err)
			}
			if err := os.Chmod(p, perm); err != nil {
				return fmt.Errorf("crashfs: rebuild: %w", err)
			}
			// The new inode's shadow is the old one's, which holds
			// exactly the data just copied.
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				return fmt.Errorf("crashfs: rebuild: %w", err)
			}
			if c.shadows[e.ino] {
				tmp := c.shadowPath(st.Ino) + ".new"
				if err := os.Rename(c.shadowPath(e.ino), tmp); err != nil {
					return fmt.Errorf("crashfs: rebuild: %w", err)
				}
				shadows[st.Ino] = true
				delete(c.shadows, e.ino)
			}
		}
	}
	return nil
}

// Unmount unmounts the file system, detaching it if it is busy. The live
// tree stays under the work directory.
func (c *FS) Unmount() error {
	return c.unmount()
}

func (c *FS) unmount() error {
	if c.server == nil {
		return nil
	}
	c.frozen.Store(true)
	// Processes just killed may still hold files open for a moment.
	var err error
	for range 50 {
		if err = c.server.Unmount(); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		if derr := unix.Unmount(c.mountpoint, unix.MNT_DETACH); derr != nil {
			return fmt.Errorf("crashfs: unmount %s: %w (detach: %v)", c.mountpoint, err, derr)
		}
		// The kernel ends the session (and the server's loop) only
		// once the last file is closed: do not wait for that.
		c.server = nil
		return nil
	}
	c.server.Wait()
	c.server = nil
	return nil
}

// fixShadows renames the shadows rebuild moved to "<new inode>.new" (a
// name that cannot collide with an old inode's shadow still to be moved)
// to their final names.
func (c *FS) fixShadows() error {
	ents, err := os.ReadDir(c.shadowDir())
	if err != nil {
		return fmt.Errorf("crashfs: %w", err)
	}
	for _, de := range ents {
		n := de.Name()
		if filepath.Ext(n) != ".new" {
			continue
		}
		if err := os.Rename(filepath.Join(c.shadowDir(), n), filepath.Join(c.shadowDir(), n[:len(n)-4])); err != nil {
			return fmt.Errorf("crashfs: %w", err)
		}
	}
	return nil
}

// copyFile copies src to dst (created or truncated), leaving holes where
// src has runs of zeros.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("crashfs: %w", err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return fmt.Errorf("crashfs: %w", err)
	}
	out, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("crashfs: %w", err)
	}
	if err := copyRange(in, out, 0, fi.Size()); err != nil {
		out.Close()
		return err
	}
	if err := out.Truncate(fi.Size()); err != nil {
		out.Close()
		return fmt.Errorf("crashfs: %w", err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("crashfs: %w", err)
	}
	return nil
}

// copyRange copies bytes [lo, hi) of in to the same offsets of out,
// skipping 64 KiB blocks of zeros where out has nothing yet.
func copyRange(in, out *os.File, lo, hi int64) error {
	ofi, err := out.Stat()
	if err != nil {
		return fmt.Errorf("crashfs: %w", err)
	}
	outSize := ofi.Size()
	buf := make([]byte, 64<<10)
	for off := lo; off < hi; {
		n := int(min(int64(len(buf)), hi-off))
		m, err := in.ReadAt(buf[:n], off)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("crashfs: read: %w", err)
		}
		if m == 0 {
			break
		}
		if off >= outSize && allZero(buf[:m]) {
			off += int64(m)
			continue
		}
		if _, err := out.WriteAt(buf[:m], off); err != nil {
			return fmt.Errorf("crashfs: write shadow: %w", err)
		}
		off += int64(m)
	}
	return nil
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// syncFile makes the data of regular file ino, open as fd, durable.
func (c *FS) syncFile(ino uint64, fd int) syscall.Errno {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.frozen.Load() {
		return syscall.EIO
	}
	c.stats.FileSyncs++
	d := c.files[ino]
	if c.shadows[ino] && (d == nil || !d.set) {
		return 0
	}
	// Read through a descriptor of our own: fd may be write-only.
	in, err := os.Open("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return fs.ToErrno(err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return fs.ToErrno(err)
	}
	out, err := os.OpenFile(c.shadowPath(ino), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fs.ToErrno(err)
	}
	defer out.Close()
	size := fi.Size()
	if !c.shadows[ino] {
		if err := out.Truncate(0); err != nil {
			return fs.ToErrno(err)
		}
		err = copyRange(in, out, 0, size)
	} else {
		err = copyRange(in, out, d.lo, min(d.hi, size))
	}
	if err != nil {
		return syscall.EIO
	}
	if err := out.Truncate(size); err != nil {
		return fs.ToErrno(err)
	}
	c.shadows[ino] = true
	delete(c.files, ino)
	return 0
}

// syncDir makes the current listing of directory ino (at path) durable.
func (c *FS) syncDir(ino uint64, path string) syscall.Errno {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.frozen.Load() {
		return syscall.EIO
	}
	c.stats.DirSyncs++
	listing, err := readListing(path)
	if err != nil {
		return syscall.EIO
	}
	c.dirs[ino] = listing
	return 0
}

// wrote records that bytes [lo, hi) of inode ino changed.
func (c *FS) wrote(ino uint64, lo, hi int64) {
	c.mu.Lock()
	d := c.files[ino]
	if d == nil {
		d = &dirty{}
		c.files[ino] = d
	}
	d.add(lo, hi)
	c.mu.Unlock()
}

// bury moves the backing file at p to the graveyard instead of removing
// it, so that its inode number is not reused while its durable copy may
// still be named somewhere.
func (c *FS) bury(p string) error {
	c.mu.Lock()
	c.graveN++
	g := filepath.Join(c.grave, strconv.FormatUint(c.graveN, 10))
	c.mu.Unlock()
	return os.Rename(p, g)
}

// buryLink keeps a second name of the file at p in the graveyard (before
// a rename replaces it). A missing file is fine.
func (c *FS) buryLink(p string) error {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return nil // rename over a directory needs it empty; nothing to keep
	}
	c.mu.Lock()
	c.graveN++
	g := filepath.Join(c.grave, strconv.FormatUint(c.graveN, 10))
	c.mu.Unlock()
	return os.Link(p, g)
}

// node is a loopback node whose changes are tracked.
type node struct {
	*fs.LoopbackNode
	c *FS
}

var (
	_ fs.NodeWrapChilder    = (*node)(nil)
	_ fs.NodeOpener         = (*node)(nil)
	_ fs.NodeCreater        = (*node)(nil)
	_ fs.NodeUnlinker       = (*node)(nil)
	_ fs.NodeRmdirer        = (*node)(nil)
	_ fs.NodeRenamer        = (*node)(nil)
	_ fs.NodeSetattrer      = (*node)(nil)
	_ fs.NodeFsyncer        = (*node)(nil)
	_ fs.NodeOpendirHandler = (*node)(nil)
	_ fs.NodeCopyFileRanger = (*node)(nil)
	_ fs.NodeLookuper       = (*node)(nil)
	_ fs.NodeMkdirer        = (*node)(nil)
	_ fs.NodeGetattrer      = (*node)(nil)
	_ fs.NodeReaddirer      = (*node)(nil)
	_ fs.NodeLinker         = (*node)(nil)
	_ fs.NodeSymlinker      = (*node)(nil)
	_ fs.FileFsyncdirer     = (*dirHandle)(nil)
	_ fs.FileWriter         = (*file)(nil)
	_ fs.FileWritever       = (*file)(nil)
	_ fs.FileSetattrer      = (*file)(nil)
	_ fs.FileAllocater      = (*file)(nil)
	_ fs.FileReaddirenter   = (*dirHandle)(nil)
	_ fs.FileReleasedirer   = (*dirHandle)(nil)
	_ fs.FileSeekdirer      = (*dirHandle)(nil)
	_ fs.NodeStatfser       = (*node)(nil)
	_ fs.NodeReadlinker     = (*node)(nil)
	_ fs.NodeGetxattrer     = (*node)(nil)
	_ fs.NodeMknoder        = (*node)(nil)
	_ fs.FileReader         = (*file)(nil)
	_ fs.FileFsyncer        = (*file)(nil)
	_ fs.FileReleaser       = (*file)(nil)
	_ fs.FileGetattrer      = (*file)(nil)
	_ fs.FileFlusher        = (*file)(nil)
	_ fs.FileLseeker        = (*file)(nil)
)

func (n *node) WrapChild(_ context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	if ln, ok := ops.(*fs.LoopbackNode); ok {
		return &node{LoopbackNode: ln, c: n.c}
	}
	return ops
}

// backing returns the node's path in the live tree.
func (n *node) backing() string {
	return filepath.Join(n.RootData.Path, n.Path(n.RootData.RootNode.EmbeddedInode()))
}

// ino returns the backing inode number (the root's FUSE node id is 1).
func (n *node) ino() uint64 {
	if n.IsRoot() {
		n.c.mu.Lock()
		defer n.c.mu.Unlock()
		return n.c.rootIno
	}
	return n.StableAttr().Ino
}

func (n *node) frozen() bool { return n.c.frozen.Load() }

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.frozen() {
		return nil, syscall.EIO
	}
	return n.LoopbackNode.Lookup(ctx, name, out)
}

func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if n.frozen() {
		return syscall.EIO
	}
	return n.LoopbackNode.Getattr(ctx, f, out)
}

func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	if n.frozen() {
		return nil, syscall.EIO
	}
	return n.LoopbackNode.Readdir(ctx)
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.frozen() {
		return nil, syscall.EIO
	}
	return n.LoopbackNode.Mkdir(ctx, name, mode, out)
}

func (n *node) Mknod(context.Context, string, uint32, uint32, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.ENOTSUP
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.frozen() {
		return nil, syscall.EIO
	}
	return n.LoopbackNode.Link(ctx, target, name, out)
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.frozen() {
		return nil, syscall.EIO
	}
	return n.LoopbackNode.Symlink(ctx, target, name, out)
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	if n.frozen() {
		return syscall.EIO
	}
	return n.LoopbackNode.Statfs(ctx, out)
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if n.frozen() {
		return nil, syscall.EIO
	}
	return n.LoopbackNode.Readlink(ctx)
}

func (n *node) Getxattr(context.Context, string, []byte) (uint32, syscall.Errno) {
	return 0, syscall.ENODATA
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if n.frozen() {
		return nil, 0, syscall.EIO
	}
	fh, ff, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	f := &file{lf: fh.(*fs.LoopbackFile), n: n}
	if flags&syscall.O_TRUNC != 0 {
		n.c.wrote(n.ino(), 0, 1<<62) // done by the open
	}
	return f, ff, 0
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if n.frozen() {
		return nil, nil, 0, syscall.EIO
	}
	in, fh, ff, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	child, _ := in.Operations().(*node)
	if child == nil {
		return in, fh, ff, 0
	}
	f := &file{lf: fh.(*fs.LoopbackFile), n: child}
	if flags&syscall.O_TRUNC != 0 {
		child.c.wrote(child.ino(), 0, 1<<62) // done by the open
	}
	return in, f, ff, 0
}

func (n *node) Unlink(_ context.Context, name string) syscall.Errno {
	if n.frozen() {
		return syscall.EIO
	}
	p := filepath.Join(n.backing(), name)
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return fs.ToErrno(err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return syscall.EISDIR
	}
	return fs.ToErrno(n.c.bury(p))
}

func (n *node) Rmdir(_ context.Context, name string) syscall.Errno {
	if n.frozen() {
		return syscall.EIO
	}
	p := filepath.Join(n.backing(), name)
	d, err := os.Open(p)
	if err != nil {
		return fs.ToErrno(err)
	}
	names, _ := d.Readdirnames(1)
	d.Close()
	if len(names) > 0 {
		return syscall.ENOTEMPTY
	}
	return fs.ToErrno(n.c.bury(p))
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if n.frozen() {
		return syscall.EIO
	}
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	if flags&(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) == 0 {
		if err := n.c.buryLink(filepath.Join(np.backing(), newName)); err != nil {
			return fs.ToErrno(err)
		}
	}
	return n.LoopbackNode.Rename(ctx, name, np.LoopbackNode, newName, flags)
}

func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if n.frozen() {
		return syscall.EIO
	}
	lf, isFile := f.(*file)
	sz, ok := in.GetSize()
	var lo, hi int64
	if ok {
		var st unix.Stat_t
		switch {
		case isFile:
			lo, hi = lf.truncating(int64(sz))
		case unix.Lstat(n.backing(), &st) == nil:
			lo, hi = min(st.Size, int64(sz)), max(st.Size, int64(sz))
		default:
			lo, hi = 0, 1<<62
		}
	}
	if isFile {
		f = lf.lf
	}
	errno := n.LoopbackNode.Setattr(ctx, f, in, out)
	if ok {
		n.c.wrote(n.ino(), lo, hi)
	}
	return errno
}

func (n *node) CopyFileRange(context.Context, fs.FileHandle, uint64, *fs.Inode, fs.FileHandle, uint64, uint64, uint64) (uint32, syscall.Errno) {
	return 0, syscall.ENOSYS // the kernel falls back to reads and writes
}

// Fsync is both FSYNC of a file and, for handles without Fsyncdir,
// FSYNCDIR.
func (n *node) Fsync(_ context.Context, f fs.FileHandle, _ uint32) syscall.Errno {
	if n.frozen() {
		return syscall.EIO
	}
	if n.IsDir() {
		return n.c.syncDir(n.ino(), n.backing())
	}
	lf, ok := f.(*file)
	if !ok {
		return syscall.EIO
	}
	return n.c.syncFile(n.ino(), lf.fd())
}

func (n *node) OpendirHandle(ctx context.Context, _ uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if n.frozen() {
		return nil, 0, syscall.EIO
	}
	ds, errno := fs.NewLoopbackDirStream(n.backing())
	if errno != 0 {
		return nil, 0, errno
	}
	return &dirHandle{ds: ds, n: n}, 0, 0
}

// dirHandle is an open directory; its fsync is tracked.
type dirHandle struct {
	ds fs.DirStream
	n  *node
}

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if r, ok := d.ds.(fs.FileReaddirenter); ok {
		return r.Readdirent(ctx)
	}
	if !d.ds.HasNext() {
		return nil, 0
	}
	e, errno := d.ds.Next()
	return &e, errno
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if s, ok := d.ds.(fs.FileSeekdirer); ok {
		return s.Seekdir(ctx, off)
	}
	return syscall.ENOTSUP
}

func (d *dirHandle) Releasedir(context.Context, uint32) { d.ds.Close() }

func (d *dirHandle) Fsyncdir(context.Context, uint32) syscall.Errno {
	if d.n.frozen() {
		return syscall.EIO
	}
	return d.n.c.syncDir(d.n.ino(), d.n.backing())
}

// file is an open regular file; its writes are tracked. It does not
// embed the LoopbackFile: a handle that offers its descriptor
// (PassthroughFd) lets the kernel read and write the backing file directly
// (FUSE passthrough), bypassing the tracking.
type file struct {
	lf *fs.LoopbackFile
	n  *node
}

func (f *file) fd() int {
	fd, _ := f.lf.PassthroughFd()
	return fd
}

func (f *file) Release(ctx context.Context) syscall.Errno { return f.lf.Release(ctx) }

func (f *file) Flush(ctx context.Context) syscall.Errno { return f.lf.Flush(ctx) }

func (f *file) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	if f.n.frozen() {
		return syscall.EIO
	}
	return f.lf.Getattr(ctx, out)
}

func (f *file) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return f.lf.Lseek(ctx, off, whence)
}

func (f *file) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if f.n.frozen() {
		return nil, syscall.EIO
	}
	return f.lf.Read(ctx, buf, off)
}

func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if f.n.frozen() {
		return 0, syscall.EIO
	}
	// Recorded after the write: an fsync racing with it then either
	// copies the new data or leaves the range dirty for the next one.
	n, errno := f.lf.Write(ctx, data, off)
	f.n.c.wrote(f.n.ino(), off, off+int64(len(data)))
	return n, errno
}

func (f *file) Fsync(ctx context.Context, _ uint32) syscall.Errno {
	return f.n.Fsync(ctx, f, 0)
}

// truncating returns the range a truncation to size changes, to record
// (with wrote) once it is done.
func (f *file) truncating(size int64) (lo, hi int64) {
	var st unix.Stat_t
	if err := unix.Fstat(f.fd(), &st); err == nil {
		return min(st.Size, size), max(st.Size, size)
	}
	return 0, 1 << 62
}

func (f *file) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if f.n.frozen() {
		return syscall.EIO
	}
	sz, ok := in.GetSize()
	var lo, hi int64
	if ok {
		lo, hi = f.truncating(int64(sz))
	}
	errno := f.lf.Setattr(ctx, in, out)
	if ok {
		f.n.c.wrote(f.n.ino(), lo, hi)
	}
	return errno
}

func (f *file) Allocate(ctx context.Context, off uint64, sz uint64, mode uint32) syscall.Errno {
	if f.n.frozen() {
		return syscall.EIO
	}
	// fallocate may grow the file or punch holes: the range changed.
	var st unix.Stat_t
	hi := int64(off + sz)
	if err := unix.Fstat(f.fd(), &st); err == nil {
		hi = max(hi, st.Size)
	}
	errno := f.lf.Allocate(ctx, off, sz, mode)
	f.n.c.wrote(f.n.ino(), int64(off), hi)
	return errno
}

func (f *file) Writev(ctx context.Context, data [][]byte, off int64) (uint32, syscall.Errno) {
	if f.n.frozen() {
		return 0, syscall.EIO
	}
	n := 0
	for _, b := range data {
		n += len(b)
	}
	w, errno := f.lf.Writev(ctx, data, off)
	f.n.c.wrote(f.n.ino(), off, off+int64(n))
	return w, errno
}
