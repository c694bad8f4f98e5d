package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary serve as the floor: startFloor runs
// os.Executable, which is the test binary under go test.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "serve-floor" {
		os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// TestFloorLogsWhatItAcknowledges drives the floor with 4 publishers × 16
// in flight, stops it, and reads its log back: every acknowledged publish is
// there, whole, with a CRC that matches, and the statistics count each
// acknowledgement once.
func TestFloorLogsWhatItAcknowledges(t *testing.T) {
	dir := t.TempDir()
	b, err := startFloor(dir, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer b.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	spec := loadSpec{pubs: 4, window: 16, qos: 1, messages: 4000, payload: 64, topic: "ingest"}
	run, err := drive(ctx, b.addr, spec, "floor")
	if err != nil {
		t.Fatal(err)
	}
	if run.acked != 4000 {
		t.Fatalf("acked %d of 4000", run.acked)
	}
	b.stop()
	st, err := floorResult(b)
	if err != nil {
		t.Fatal(err)
	}
	if st.Messages != 4000 || st.Fsyncs < 1 || st.Fsyncs > 4000 || st.FsyncSec <= 0 {
		t.Errorf("statistics %+v: want 4000 messages in 1..4000 fdatasyncs taking some time", st)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "floor.log"))
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) != floorLogSize {
		t.Errorf("log is %d bytes, want the pre-written %d", len(raw), floorLogSize)
	}
	// Records until the zeros: [len][crc][PUBLISH body]; the body's payload
	// starts with the publisher id and sequence (see publisher).
	seen := map[[2]uint32]bool{}
	for off := 0; off+8 <= len(raw); {
		n := int(binary.BigEndian.Uint32(raw[off:]))
		if n == 0 {
			break
		}
		body := raw[off+8 : off+8+n]
		if crc32.ChecksumIEEE(body) != binary.BigEndian.Uint32(raw[off+4:]) {
			t.Fatalf("record at %d: CRC mismatch", off)
		}
		tl := int(binary.BigEndian.Uint16(body))
		topic := string(body[2 : 2+tl])
		payload := body[2+tl+2:]
		if !strings.HasPrefix(topic, "ingest/p") || len(payload) != 64 {
			t.Fatalf("record at %d: topic %q, %d payload bytes", off, topic, len(payload))
		}
		seen[[2]uint32{binary.BigEndian.Uint32(payload), binary.BigEndian.Uint32(payload[4:])}] = true
		off += 8 + n
	}
	for p := range uint32(4) {
		for s := range uint32(1000) {
			if !seen[[2]uint32{p, s}] {
				t.Fatalf("publisher %d seq %d was acknowledged but is not in the log (%d records)", p, s, len(seen))
			}
		}
	}
	if len(seen) != 4000 {
		t.Errorf("%d distinct records in the log, want 4000", len(seen))
	}
}

// TestFloorRefusesNonLoopback: like every target, the floor listens on
// loopback only.
func TestFloorRefusesNonLoopback(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"serve-floor", "0.0.0.0:0", t.TempDir()}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "loopback") {
		t.Errorf("exit %d, stderr %q: want 1 and a loopback refusal", code, stderr.String())
	}
	code = run(context.Background(), []string{"serve-floor", "127.0.0.1:0"}, &stdout, &stderr)
	if code != 2 {
		t.Errorf("serve-floor without a directory: exit %d, want 2", code)
	}
}
