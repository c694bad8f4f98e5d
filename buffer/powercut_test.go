package buffer

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/fieldgate/fieldgate/internal/crashfs"

	"github.com/fieldgate/fieldgate/internal/durable"
)

// powerCutChild runs crashChild on dir and cuts the power (and kills the
// child at the same moment) once it acknowledged cutAfter appends. It
// returns the acknowledged appends (seq → payload id) and the seqs being
// acked.
func powerCutChild(t *testing.T, c *crashfs.FS, dir string, cutAfter int) (map[uint64]string, map[uint64]bool) {
	t.Helper()
	appended := map[uint64]string{}
	acking := map[uint64]bool{}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"=1", crashDirEnv+"="+dir, crashBigEnv+"=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(stdout)
	cut := false
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			break
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		seq, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			t.Fatalf("child said %q", line)
		}
		switch {
		case f[0] == "appended" && len(f) >= 3:
			if !cut {
				appended[seq] = f[2]
			}
		case f[0] == "acking":
			acking[seq] = true
		}
		if !cut && len(appended) >= cutAfter {
			// Nothing the child does from now on reaches the disk,
			// and what it prints is no longer counted as acknowledged.
			c.Cut()
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			cut = true
		}
	}
	_ = cmd.Wait()
	if !cut {
		t.Fatalf("child stopped after %d appends: %s", len(appended), stderr.String())
	}
	if err := c.Remount(); err != nil {
		t.Fatal(err)
	}
	return appended, acking
}

// checkRecovered opens the store after a cut, in a child process (badger
// maps its files: page faults on a FUSE file in the process that serves
// the file system can deadlock its garbage collector), and checks that
// every acknowledged append not being acked is there, in order, with its
// data, and that the store was not set aside. The child acks everything
// and closes the store.
func checkRecovered(t *testing.T, dir string, appended map[uint64]string, acking map[uint64]bool) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashVerifyEnv+"=1", crashDirEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("verifying child: %v: %s", err, stderr.String())
	}
	defer func() {
		if t.Failed() {
			t.Logf("verifying child's log:\n%s", stderr.String())
		}
	}()
	var seqs []uint64
	present := map[uint64]bool{}
	quarantined := ""
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 3 && f[0] == "record":
			seq, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				t.Fatalf("child said %q", line)
			}
			if n := len(seqs); n > 0 && seq <= seqs[n-1] {
				t.Fatalf("out of order: %d after %d", seq, seqs[n-1])
			}
			seqs = append(seqs, seq)
			present[seq] = true
			if want, ok := appended[seq]; ok && f[2] != want {
				t.Errorf("seq %d has %q, want %q", seq, f[2], want)
			}
		case len(f) == 2 && f[0] == "quarantined":
			quarantined = f[1]
		}
	}
	if quarantined != "0" {
		t.Errorf("the store was set aside after the power cut (quarantined %q)", quarantined)
	}
	lost := 0
	for s := range appended {
		if !present[s] && !acking[s] {
			lost++
			if lost < 10 {
				t.Errorf("acknowledged seq %d (%s) lost", s, appended[s])
			}
		}
	}
	t.Logf("%d appends acknowledged, %d records recovered, %d lost", len(appended), len(seqs), lost)
}

// verifyChild opens the store, prints "record <seq> <payload id>" for
// every record and "quarantined <n>", acks everything and closes.
func verifyChild() {
	q, err := Open(os.Getenv(crashDirEnv), testConfig(), slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	var after uint64
	var seqs []uint64
	for {
		recs, err := q.Read(after, 1000, 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, "read:", err)
			os.Exit(3)
		}
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			id, _, _ := bytes.Cut(r.Data, []byte(" "))
			fmt.Printf("record %d %s\n", r.Seq, id)
			seqs = append(seqs, r.Seq)
			after = r.Seq
		}
	}
	fmt.Printf("quarantined %d\n", q.Stats().Quarantined)
	if err := q.Ack(seqs...); err != nil {
		fmt.Fprintln(os.Stderr, "ack:", err)
		os.Exit(4)
	}
	if err := q.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "close:", err)
		os.Exit(5)
	}
}

func mountCrashFS(t *testing.T) *crashfs.FS {
	t.Helper()
	c, err := crashfs.Mount(t.TempDir(), t.TempDir())
	if err != nil {
		t.Fatalf("crash-simulating file system (needs /dev/fuse and root): %v", err)
	}
	t.Cleanup(func() {
		if err := c.Unmount(); err != nil {
			t.Error(err)
		}
	})
	return c
}

const crashVerifyEnv = "FIELDGATE_BUFFER_CRASH_VERIFY"

// TestPowerCut cuts the power while a process appends (half the values
// over 4 KiB, in badger's value log) and acks, at seeded random moments,
// on a file system that keeps only what was fsync'd. Every acknowledged
// append must survive and the store must never be set aside. Regressions:
//   - the first cut, 20 appends into a new data directory: the store's
//     directory and its parents were created without syncing their parent,
//     so the whole store was gone;
//   - cuts mid-stream with values in the value log: the WALs were synced
//     before the value log while the next batch was being written, so a
//     durable WAL record could point at a value that was not, and the store
//     was set aside as corrupt (whenever the cut fell between the two
//     syncs).
func TestPowerCut(t *testing.T) {
	c := mountCrashFS(t)
	dir := filepath.Join(c.Mountpoint(), "data", "buffer")
	seed := uint64(rand.Int64())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 23))
	for round := range 6 {
		cutAfter := 20
		if round > 0 {
			cutAfter = 50 + rng.IntN(1500)
		}
		appended, acking := powerCutChild(t, c, dir, cutAfter)
		checkRecovered(t, dir, appended, acking)
		if t.Failed() {
			t.Fatalf("round %d (cut after %d appends) failed; seed %d", round, cutAfter, seed)
		}
	}
}

// A corrupt store is moved aside and a fresh one created: durably, or a
// power cut brings the corrupt one back and what was appended since is
// lost.
func TestPowerCutAfterQuarantine(t *testing.T) {
	c := mountCrashFS(t)
	dir := filepath.Join(c.Mountpoint(), "buffer")
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "MANIFEST"), []byte("not a manifest"), 0o640); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dir, c.Mountpoint()} {
		if err := durable.SyncDir(d); err != nil {
			t.Fatal(err)
		}
	}
	appended, acking := powerCutChild(t, c, dir, 200)
	checkRecovered(t, dir, appended, acking)
	moved, _ := filepath.Glob(dir + ".corrupt-*")
	if len(moved) != 1 {
		t.Errorf("stores set aside: %v, want the corrupt one", moved)
	}
}

// Badger flushes a memtable to a level-0 table, appends it to the MANIFEST
// (synced) and removes the WAL, without syncing the directory: a power cut
// can leave the MANIFEST naming a table that is not there, and the WAL
// still in place. This builds that state from a real store (the WAL as
// synced before the flush, the MANIFEST after it, no table) and checks that
// Open forgets the table and replays the WAL instead of setting the store
// aside.
func TestPowerCutTableListedButMissing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "buffer")
	q, err := Open(dir, testConfig(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if _, err := q.Append(t.Context(), []byte(fmt.Sprintf("r%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	before := filepath.Join(t.TempDir(), "before")
	if err := os.CopyFS(before, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	tables, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	if len(tables) == 0 {
		t.Fatal("closing the store flushed no table")
	}
	manifest, err := os.ReadFile(filepath.Join(dir, "MANIFEST"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(before, "MANIFEST"), manifest, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(before, "LOCK")); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}

	q, err = Open(before, testConfig(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if st := q.Stats(); st.Quarantined != 0 {
		t.Fatalf("store set aside: %+v", st)
	}
	recs := readAll(t, q, 0)
	if len(recs) != 100 || string(recs[0].Data) != "r0" || string(recs[99].Data) != "r99" {
		t.Errorf("after the repair: %d records, want r0..r99", len(recs))
	}
}

// Found by TestPowerCut of the binary (cmd/fieldgate, seed
// 1796665114300754960, cut 1): badger had created and sized a new WAL, the
// directory sync of a group commit made its entry durable, its size was
// not; after the cut badger refused the empty file ("while opening fid: 2
// err: Create a new file") and the store was set aside with every
// acknowledged record in it.
func TestPowerCutEmptyLog(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "buffer")
	q, err := Open(dir, testConfig(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := q.Append(t.Context(), []byte(fmt.Sprintf("r%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	before := filepath.Join(t.TempDir(), "before")
	if err := os.CopyFS(before, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"00002.mem", "000002.vlog"} {
		if err := os.WriteFile(filepath.Join(before, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_ = os.Remove(filepath.Join(before, "LOCK"))
	q, err = Open(before, testConfig(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if st := q.Stats(); st.Quarantined != 0 {
		t.Fatalf("store set aside: %+v", st)
	}
	if recs := readAll(t, q, 0); len(recs) != 10 {
		t.Errorf("%d records after the cut, want 10", len(recs))
	}
}
