package buffer

import (
	"bytes"
	"context"
	"testing"
)

// The group commit syncs badger's files itself (storeSyncer): every WAL,
// also the one of a memtable rotated out but not yet flushed, and the
// value-log file a rotation left behind. These tests drive both rotations
// and check that the syncer found and synced the older file, and that
// everything appended reads back after a reopen.

func TestSyncerFollowsMemtableRotation(t *testing.T) {
	dir := t.TempDir()
	q := openTest(t, dir, bigConfig())
	rec := bytes.Repeat([]byte{'m'}, 1000) // below the value threshold: WAL only
	batch := make([][]byte, 50)
	for i := range batch {
		batch[i] = rec
	}
	var n int
	// 8 MiB memtables: 48 MiB gives several rotations.
	for n < 48<<10 && q.syncer.maxWALs < 2 {
		if _, err := q.AppendBatch(context.Background(), batch); err != nil {
			t.Fatal(err)
		}
		n += len(batch)
	}
	if q.syncer.maxWALs < 2 {
		t.Fatalf("after %d records the syncer never saw a second WAL (badger's file layout changed?)", n)
	}
	reopenAndCount(t, q, dir, n)
}

func TestSyncerFollowsValueLogRotation(t *testing.T) {
	dir := t.TempDir()
	q := openTest(t, dir, bigConfig())
	rec := bytes.Repeat([]byte{'v'}, 8<<10) // above the value threshold: value log
	batch := make([][]byte, 16)
	for i := range batch {
		batch[i] = rec
	}
	var n int
	// 16 MiB value-log files: 40 MiB rotates at least twice.
	for n < 5000 {
		if _, err := q.AppendBatch(context.Background(), batch); err != nil {
			t.Fatal(err)
		}
		n += len(batch)
	}
	if q.syncer.maxVlogs < 2 {
		t.Fatalf("the syncer never synced the value-log file a rotation left behind (max %d per sync)", q.syncer.maxVlogs)
	}
	reopenAndCount(t, q, dir, n)
}

func TestSyncerFallsBackOutsideBadger(t *testing.T) {
	s := newStoreSyncer(t.TempDir())
	defer s.close()
	ok, err := s.sync(true)
	if ok || err != nil {
		t.Fatalf("sync of a directory without WALs = %v, %v; want false, nil (DB.Sync fallback)", ok, err)
	}
}

func reopenAndCount(t *testing.T, q *Queue, dir string, want int) {
	t.Helper()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = openTest(t, dir, bigConfig())
	defer q.Close()
	got, after := 0, uint64(0)
	for {
		recs, err := q.Read(after, 1000, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			break
		}
		got += len(recs)
		after = recs[len(recs)-1].Seq
	}
	if got != want {
		t.Fatalf("read back %d records after reopen, want %d", got, want)
	}
}

func bigConfig() Config {
	c := testConfig()
	c.MaxBytes = 1 << 30
	return c
}

// The directory is listed again only when inotify reports a WAL or
// value-log file created or deleted, not for every sync.
func TestSyncerListsOnlyOnChange(t *testing.T) {
	q := openTest(t, t.TempDir(), bigConfig())
	for i := range 200 {
		if _, err := q.Append(context.Background(), payload(i)); err != nil {
			t.Fatal(err)
		}
	}
	syncs := q.Stats().Syncs
	if syncs < 200 {
		t.Fatalf("%d syncs for 200 sequential appends", syncs)
	}
	if q.syncer.ino < 0 {
		t.Fatal("inotify unavailable: the syncer lists the directory for every sync")
	}
	if l := q.syncer.listings; l > 5 {
		t.Fatalf("directory listed %d times for %d syncs without any rotation", l, syncs)
	}
}
