package buffer

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// fileRSS returns how much of the process's resident memory is file
// pages (the "shared" field of /proc/self/statm: mapped files, badger's
// included), or false when it cannot tell.
func fileRSS() (int64, bool) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return 0, false
	}
	pages, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return 0, false
	}
	return pages * int64(os.Getpagesize()), true
}

// trimMappings asks the kernel to reclaim the pages of badger's mmap'd
// tables, value logs and memtable logs (MADV_PAGEOUT, Linux 5.4+). Badger
// reads and writes these files only through mmap, so every page it ever
// touched would otherwise stay in the process's RSS (hundreds of MB with a
// 1M backlog) although it is only file cache. MADV_PAGEOUT never loses
// data: dirty pages are written back first (the memtable log is fsync'd by
// every append commit anyway and only appended to), and a page that is used
// again is simply read back. It returns the number of bytes of mappings
// advised.
func trimMappings(dir string) int64 {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return 0
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0
	}
	var total int64
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		// 7f...-7f... rw-s 00000000 fd:01 1234   /path/000001.sst
		f := strings.Fields(sc.Text())
		if len(f) < 6 || filepath.Dir(f[5]) != abs {
			continue
		}
		if ext := filepath.Ext(f[5]); ext != ".sst" && ext != ".vlog" && ext != ".mem" {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		// No unsafe.Pointer: the range may have been unmapped meanwhile;
		// the kernel then just reports an error, which is ignored.
		_, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), unix.MADV_PAGEOUT)
		if errno == 0 {
			total += int64(end - start)
		}
	}
	return total
}
