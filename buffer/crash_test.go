package buffer

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
)

const (
	crashChildEnv = "FIELDGATE_BUFFER_CRASH_CHILD"
	crashDirEnv   = "FIELDGATE_BUFFER_CRASH_DIR"
	// crashBigEnv makes every other payload 5000 bytes long (padded after
	// a space), so that values go to badger's value log.
	crashBigEnv = "FIELDGATE_BUFFER_CRASH_BIG"
)

// crashChild appends forever from several goroutines, printing
// "appended <seq> <payload>" once each Append returned, while a reader acks
// all seqs except multiples of 5 below 2000, printing "acking <seq>" before each Ack. It runs until it is
// killed.
func crashChild() {
	q, err := Open(os.Getenv(crashDirEnv), testConfig(), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	say := func(s string) {
		mu.Lock()
		out.WriteString(s)
		out.Flush()
		mu.Unlock()
	}
	big := os.Getenv(crashBigEnv) != ""
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				p := fmt.Sprintf("w%d-%d", w, i)
				data := []byte(p)
				if big && i%2 == 0 {
					data = append(data, ' ')
					data = append(data, bytes.Repeat([]byte{'v'}, 5000-len(data))...)
				}
				s, err := q.Append(context.Background(), data)
				if err != nil {
					fmt.Fprintln(os.Stderr, "append:", err)
					os.Exit(3)
				}
				say(fmt.Sprintf("appended %d %s\n", s, p))
			}
		})
	}
	wg.Go(func() {
		var after uint64
		for {
			recs, err := q.Read(after, 100, 0)
			if err != nil {
				fmt.Fprintln(os.Stderr, "read:", err)
				os.Exit(4)
			}
			for _, r := range recs {
				after = r.Seq
				if r.Seq%5 != 0 || r.Seq > 2000 {
					say(fmt.Sprintf("acking %d\n", r.Seq))
					if err := q.Ack(r.Seq); err != nil {
						fmt.Fprintln(os.Stderr, "ack:", err)
						os.Exit(5)
					}
				}
			}
			if len(recs) == 0 {
				<-q.Notify()
			}
		}
	})
	wg.Wait()
}

// TestCrashRecovery kills (SIGKILL) a process in the middle of appending and
// acking, then checks that every record whose Append returned is present,
// in order, with its data, unless it was being acked.
func TestCrashRecovery(t *testing.T) {
	dir := t.TempDir()
	for round := range 2 {
		appended := map[uint64]string{}
		acking := map[uint64]bool{}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"=1", crashDirEnv+"="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Lines are processed only when complete: the kill may cut the
		// last one. After the kill, the rest of the pipe is read too: an
		// "acking" line printed after the 3000th append still counts.
		rd := bufio.NewReader(stdout)
		killed := false
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
			case f[0] == "appended" && len(f) == 3:
				appended[seq] = f[2]
			case f[0] == "acking":
				acking[seq] = true
			}
			if !killed && len(appended) >= 3000 {
				if err := cmd.Process.Kill(); err != nil {
					t.Fatal(err)
				}
				killed = true
			}
		}
		_ = cmd.Wait()
		if len(appended) < 3000 {
			t.Fatalf("round %d: child stopped after %d appends: %s", round, len(appended), stderr.String())
		}

		q, err := Open(dir, testConfig(), testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		recs := readAll(t, q, 0)
		present := map[uint64]bool{}
		for i, r := range recs {
			present[r.Seq] = true
			if i > 0 && r.Seq <= recs[i-1].Seq {
				t.Fatalf("round %d: out of order: %d after %d", round, r.Seq, recs[i-1].Seq)
			}
			if want, ok := appended[r.Seq]; ok && string(r.Data) != want {
				t.Errorf("round %d: seq %d has %q, want %q", round, r.Seq, r.Data, want)
			}
		}
		var maxSeq uint64
		lost := 0
		for s := range appended {
			maxSeq = max(maxSeq, s)
			if !present[s] && !acking[s] {
				lost++
				if lost < 10 {
					t.Errorf("round %d: acknowledged seq %d (%s) lost", round, s, appended[s])
				}
			}
		}
		st := q.Stats()
		if st.Quarantined != 0 || st.Rebuilt != 0 {
			t.Errorf("round %d: crash recovery needed quarantine/rebuild: %+v", round, st)
		}
		t.Logf("round %d: %d appends acknowledged, %d being acked, %d records recovered, lost %d", round, len(appended), len(acking), len(recs), lost)
		s, err := q.Append(context.Background(), []byte("after crash"))
		if err != nil || s <= maxSeq {
			t.Errorf("round %d: Append after crash = %d, %v; want > %d", round, s, err, maxSeq)
		}
		// Ack everything so the next round starts from a non-zero head.
		if err := q.Ack(append(seqsOf(recs), s)...); err != nil {
			t.Fatal(err)
		}
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
