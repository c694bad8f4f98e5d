package crashfs

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// mount mounts a fresh file system for one test.
func mount(t *testing.T) *FS {
	t.Helper()
	mnt, work := t.TempDir(), t.TempDir()
	c, err := Mount(mnt, work)
	if err != nil {
		t.Fatalf("mount (needs /dev/fuse and root): %v", err)
	}
	t.Cleanup(func() {
		if err := c.Unmount(); err != nil {
			t.Error(err)
		}
	})
	return c
}

// cut cuts the power and remounts.
func cut(t *testing.T, c *FS) {
	t.Helper()
	c.Cut()
	if err := c.Remount(); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, p string, data []byte, sync bool) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func syncDir(t *testing.T, p string) {
	t.Helper()
	d, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
}

// content returns the file's data, or "<missing>".
func content(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return "<missing>"
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func check(t *testing.T, p, want string) {
	t.Helper()
	if got := content(t, p); got != want {
		t.Errorf("%s after the cut: %q, want %q", filepath.Base(p), got, want)
	}
}

func TestCut(t *testing.T) {
	tests := []struct {
		name string
		// do acts on the mounted tree at m before the cut; after the
		// cut the files named in want must have that content.
		do   func(t *testing.T, m string)
		want map[string]string
	}{
		{
			name: "new file without any fsync is gone",
			do:   func(t *testing.T, m string) { write(t, m+"/a", []byte("data"), false) },
			want: map[string]string{"a": "<missing>"},
		},
		{
			name: "fsync of the file without the directory: the name is gone",
			do:   func(t *testing.T, m string) { write(t, m+"/a", []byte("data"), true) },
			want: map[string]string{"a": "<missing>"},
		},
		{
			name: "directory synced, file not: the name stays, empty",
			do: func(t *testing.T, m string) {
				write(t, m+"/a", []byte("data"), false)
				syncDir(t, m)
			},
			want: map[string]string{"a": ""},
		},
		{
			name: "file and directory synced: kept",
			do: func(t *testing.T, m string) {
				write(t, m+"/a", []byte("data"), true)
				syncDir(t, m)
			},
			want: map[string]string{"a": "data"},
		},
		{
			name: "writes after the fsync are lost, the synced part stays",
			do: func(t *testing.T, m string) {
				f, err := os.Create(m + "/a")
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				syncDir(t, m)
				for _, s := range []string{"one", "two"} {
					if _, err := f.WriteString(s); err != nil {
						t.Fatal(err)
					}
					if err := f.Sync(); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := f.WriteAt([]byte("XX"), 0); err != nil {
					t.Fatal(err)
				}
				if _, err := f.WriteString("three"); err != nil {
					t.Fatal(err)
				}
			},
			want: map[string]string{"a": "onetwo"},
		},
		{
			name: "fdatasync counts as fsync",
			do: func(t *testing.T, m string) {
				f, err := os.Create(m + "/a")
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				syncDir(t, m)
				if _, err := f.WriteString("data"); err != nil {
					t.Fatal(err)
				}
				if err := unix.Fdatasync(int(f.Fd())); err != nil {
					t.Fatal(err)
				}
			},
			want: map[string]string{"a": "data"},
		},
		{
			name: "rename over a file without a directory fsync is undone",
			do: func(t *testing.T, m string) {
				write(t, m+"/a", []byte("old"), true)
				syncDir(t, m)
				write(t, m+"/a.tmp", []byte("new"), true)
				if err := os.Rename(m+"/a.tmp", m+"/a"); err != nil {
					t.Fatal(err)
				}
			},
			want: map[string]string{"a": "old", "a.tmp": "<missing>"},
		},
		{
			name: "rename over a file with a directory fsync stays",
			do: func(t *testing.T, m string) {
				write(t, m+"/a", []byte("old"), true)
				syncDir(t, m)
				write(t, m+"/a.tmp", []byte("new"), true)
				if err := os.Rename(m+"/a.tmp", m+"/a"); err != nil {
					t.Fatal(err)
				}
				syncDir(t, m)
			},
			want: map[string]string{"a": "new", "a.tmp": "<missing>"},
		},
		{
			name: "rename of an unsynced file over a synced one: the name stays, the data is lost",
			do: func(t *testing.T, m string) {
				write(t, m+"/a", []byte("old"), true)
				syncDir(t, m)
				write(t, m+"/a.tmp", []byte("new"), false)
				if err := os.Rename(m+"/a.tmp", m+"/a"); err != nil {
					t.Fatal(err)
				}
				syncDir(t, m)
			},
			want: map[string]string{"a": ""},
		},
		{
			name: "unlink without a directory fsync is undone",
			do: func(t *testing.T, m string) {
				write(t, m+"/a", []byte("data"), true)
				syncDir(t, m)
				if err := os.Remove(m + "/a"); err != nil {
					t.Fatal(err)
				}
				write(t, m+"/b", []byte("other"), true) // may not reuse a's inode
			},
			want: map[string]string{"a": "data", "b": "<missing>"},
		},
		{
			name: "unlink with a directory fsync stays",
			do: func(t *testing.T, m string) {
				write(t, m+"/a", []byte("data"), true)
				syncDir(t, m)
				if err := os.Remove(m + "/a"); err != nil {
					t.Fatal(err)
				}
				syncDir(t, m)
			},
			want: map[string]string{"a": "<missing>"},
		},
		{
			name: "new file in a new directory whose parent was not synced is gone",
			do: func(t *testing.T, m string) {
				if err := os.MkdirAll(m+"/d/e", 0o755); err != nil {
					t.Fatal(err)
				}
				write(t, m+"/d/e/a", []byte("data"), true)
				syncDir(t, m+"/d/e")
				syncDir(t, m+"/d")
			},
			want: map[string]string{"d/e/a": "<missing>"},
		},
		{
			name: "new file in a new directory synced up to the root stays",
			do: func(t *testing.T, m string) {
				if err := os.MkdirAll(m+"/d/e", 0o755); err != nil {
					t.Fatal(err)
				}
				write(t, m+"/d/e/a", []byte("data"), true)
				syncDir(t, m+"/d/e")
				syncDir(t, m+"/d")
				syncDir(t, m)
			},
			want: map[string]string{"d/e/a": "data"},
		},
		{
			name: "a synced directory's unsynced subdirectory is empty",
			do: func(t *testing.T, m string) {
				if err := os.MkdirAll(m+"/d/e", 0o755); err != nil {
					t.Fatal(err)
				}
				write(t, m+"/d/e/a", []byte("data"), true)
				syncDir(t, m+"/d")
				syncDir(t, m)
			},
			want: map[string]string{"d/e/a": "<missing>"},
		},
		{
			name: "truncate without fsync is undone",
			do: func(t *testing.T, m string) {
				write(t, m+"/a", []byte("0123456789"), true)
				syncDir(t, m)
				if err := os.Truncate(m+"/a", 3); err != nil {
					t.Fatal(err)
				}
			},
			want: map[string]string{"a": "0123456789"},
		},
		{
			name: "truncate with fsync stays, also when the file grew again",
			do: func(t *testing.T, m string) {
				write(t, m+"/a", []byte("0123456789"), true)
				syncDir(t, m)
				f, err := os.OpenFile(m+"/a", os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if err := f.Truncate(3); err != nil {
					t.Fatal(err)
				}
				if err := f.Truncate(5); err != nil {
					t.Fatal(err)
				}
				if err := f.Sync(); err != nil {
					t.Fatal(err)
				}
			},
			want: map[string]string{"a": "012\x00\x00"},
		},
		{
			name: "rename between directories is durable per side",
			do: func(t *testing.T, m string) {
				for _, d := range []string{"x", "y"} {
					if err := os.Mkdir(m+"/"+d, 0o755); err != nil {
						t.Fatal(err)
					}
				}
				write(t, m+"/x/a", []byte("data"), true)
				syncDir(t, m+"/x")
				syncDir(t, m+"/y")
				syncDir(t, m)
				if err := os.Rename(m+"/x/a", m+"/y/a"); err != nil {
					t.Fatal(err)
				}
				syncDir(t, m+"/y") // the source directory is not synced
			},
			want: map[string]string{"x/a": "data", "y/a": "data"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mount(t)
			m := c.Mountpoint()
			tt.do(t, m)
			cut(t, c)
			for name, want := range tt.want {
				check(t, filepath.Join(m, name), want)
			}
		})
	}
}

// Writes through a shared mapping reach the file system when the kernel
// writes the pages back; only an msync or fsync of the file makes them
// durable.
func TestMmap(t *testing.T) {
	const size = 3 * 4096
	for _, tt := range []struct {
		name string
		sync func(t *testing.T, f *os.File, m []byte)
		want byte
	}{
		{"no sync: lost", func(*testing.T, *os.File, []byte) {}, 0},
		{"msync: kept", func(t *testing.T, _ *os.File, m []byte) {
			if err := unix.Msync(m, unix.MS_SYNC); err != nil {
				t.Fatal(err)
			}
		}, 'x'},
		{"fsync of the file: kept", func(t *testing.T, f *os.File, _ []byte) {
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
		}, 'x'},
		{"munmap without sync: lost", func(t *testing.T, _ *os.File, m []byte) {
			if err := unix.Munmap(m); err != nil {
				t.Fatal(err)
			}
		}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := mount(t)
			p := filepath.Join(c.Mountpoint(), "a")
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := f.Truncate(size); err != nil {
				t.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			syncDir(t, c.Mountpoint())
			m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
			if err != nil {
				t.Fatal(err)
			}
			copy(m[4096:], bytes.Repeat([]byte{'x'}, 100))
			tt.sync(t, f, m)
			c.Cut()
			// After the cut: the mapping's pages can no longer reach the
			// disk. The file system can only be unmounted once nothing
			// uses it (a killed process has no mappings).
			_ = unix.Munmap(m)
			f.Close()
			if err := c.Remount(); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != size || got[4096] != tt.want || got[4195] != tt.want || got[4196] != 0 {
				t.Errorf("after the cut: %d bytes, [4096]=%q [4195]=%q [4196]=%q; want %d bytes, %q %q 0", len(got), got[4096], got[4195], got[4196], size, tt.want, tt.want)
			}
		})
	}
}

// After Cut nothing reaches the disk: every operation fails.
func TestFrozenAfterCut(t *testing.T) {
	c := mount(t)
	m := c.Mountpoint()
	f, err := os.Create(m + "/a")
	if err != nil {
		t.Fatal(err)
	}
	syncDir(t, m)
	c.Cut()
	if _, err := f.WriteString("late"); !errors.Is(err, syscall.EIO) {
		t.Errorf("write after the cut: %v, want EIO", err)
	}
	if err := f.Sync(); !errors.Is(err, syscall.EIO) {
		t.Errorf("fsync after the cut: %v, want EIO", err)
	}
	f.Close()
	if err := c.Remount(); err != nil {
		t.Fatal(err)
	}
	check(t, m+"/a", "")
	if s := c.Stats(); s.Cuts != 1 {
		t.Errorf("stats: %+v, want 1 cut", s)
	}
}

// Several cuts in a row: the state carries over, and a file written
// durably before the first cut survives them all.
func TestRepeatedCuts(t *testing.T) {
	c := mount(t)
	m := c.Mountpoint()
	write(t, m+"/keep", []byte("kept"), true)
	syncDir(t, m)
	for i := range 3 {
		write(t, m+"/gone", []byte("x"), true)
		if err := os.Link(m+"/keep", m+"/link"); err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			syncDir(t, m)
		}
		cut(t, c)
		check(t, m+"/keep", "kept")
		if err := os.Remove(m + "/gone"); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		if err := os.Remove(m + "/link"); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		syncDir(t, m)
	}
	check(t, m+"/gone", "<missing>")
	check(t, m+"/link", "<missing>")
}
