package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/table"

	"github.com/dgraph-io/badger/v4/pb"
	"github.com/dgraph-io/badger/v4/y"
	"google.golang.org/protobuf/proto"
)

// checkManifest replays the MANIFEST (read-only) and checks that every
// table it lists exists. Badger's Open leaks goroutines when it fails on
// these, so they are caught before it runs.
func checkManifest(dir string, opts badger.Options) error {
	path := filepath.Join(dir, badger.ManifestFilename)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		if t, _ := filepath.Glob(filepath.Join(dir, "*.sst")); len(t) > 0 {
			return fmt.Errorf("MANIFEST missing but %d tables present: %w", len(t), errCorrupt)
		}
		return nil
	}
	if err != nil {
		return err
	}
	m, valid, err := badger.ReplayManifestFile(f, opts.ExternalMagicVersion, opts)
	_ = f.Close()
	if err != nil {
		return fmt.Errorf("MANIFEST: %v: %w", err, errCorrupt)
	}
	var missing []uint64
	for id, tm := range m.Tables {
		_, err := os.Stat(table.NewFilename(id, dir))
		switch {
		case err == nil:
		case errors.Is(err, fs.ErrNotExist) && tm.Level == 0:
			missing = append(missing, id)
		default:
			return fmt.Errorf("table %d listed in the MANIFEST: %v: %w", id, err, errCorrupt)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	// Badger flushes a memtable by creating a level-0 table, appending
	// it to the MANIFEST (synced) and removing the memtable's WAL, without
	// syncing the directory. After a power cut the MANIFEST can name a
	// table whose directory entry was never durable; then the WAL's
	// removal was not either (it came later, in the same directory), so
	// the WAL, replayed at Open, still holds the table's records. Remove
	// the table from the MANIFEST the way badger does, with a deletion.
	wals, _ := filepath.Glob(filepath.Join(dir, "*.mem"))
	if len(wals) == 0 {
		return fmt.Errorf("level-0 tables %v listed in the MANIFEST are missing and no WAL is left: %w", missing, errCorrupt)
	}
	return forgetTables(path, valid, missing)
}

// forgetTables appends the deletion of tables to the MANIFEST at path,
// whose valid length is valid (a torn record after it is cut off), and
// syncs it. The format is badger's (manifest.go): per change set, its
// length and CRC-32C (big-endian uint32s), then the protobuf.
func forgetTables(path string, valid int64, ids []uint64) error {
	cs := &pb.ManifestChangeSet{}
	for _, id := range ids {
		cs.Changes = append(cs.Changes, &pb.ManifestChange{Id: id, Op: pb.ManifestChange_DELETE})
	}
	buf, err := proto.Marshal(cs)
	if err != nil {
		return fmt.Errorf("MANIFEST: %w", err)
	}
	rec := make([]byte, 8, 8+len(buf))
	binary.BigEndian.PutUint32(rec[0:4], uint32(len(buf)))
	binary.BigEndian.PutUint32(rec[4:8], crc32.Checksum(buf, y.CastagnoliCrcTable))
	rec = append(rec, buf...)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("MANIFEST: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(valid); err != nil {
		return fmt.Errorf("MANIFEST: %w", err)
	}
	if _, err := f.WriteAt(rec, valid); err != nil {
		return fmt.Errorf("MANIFEST: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("MANIFEST: %w", err)
	}
	return nil
}

// checkTables verifies the footer and index checksum of every LSM table in
// dir, reading only the index at the end of each file. Badger itself
// panics, in a goroutine nobody can recover, when it opens a table whose
// footer is damaged (e.g. truncated); this check turns that into an error so
// that Open can move the store aside.
func checkTables(dir string) error {
	tables, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil {
		return err
	}
	for _, path := range tables {
		if err := checkTable(path); err != nil {
			return fmt.Errorf("table %s: %w", filepath.Base(path), err)
		}
	}
	return nil
}

func checkTable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	readAt := func(off, n int64) ([]byte, error) {
		if off < 0 || n < 0 || off+n > size {
			return nil, fmt.Errorf("footer points outside the file (offset %d, length %d, size %d): %w", off, n, size, errCorrupt)
		}
		b := make([]byte, n)
		if _, err := f.ReadAt(b, off); err != nil {
			return nil, err
		}
		return b, nil
	}
	pos := size - 4
	b, err := readAt(pos, 4)
	if err != nil {
		return err
	}
	chkLen := int64(binary.BigEndian.Uint32(b))
	pos -= chkLen
	b, err = readAt(pos, chkLen)
	if err != nil {
		return err
	}
	var chk pb.Checksum
	if err := proto.Unmarshal(b, &chk); err != nil {
		return fmt.Errorf("index checksum: %v: %w", err, errCorrupt)
	}
	pos -= 4
	b, err = readAt(pos, 4)
	if err != nil {
		return err
	}
	idxLen := int64(binary.BigEndian.Uint32(b))
	pos -= idxLen
	idx, err := readAt(pos, idxLen)
	if err != nil {
		return err
	}
	if err := y.VerifyChecksum(idx, &chk); err != nil {
		return fmt.Errorf("index: %v: %w", err, errCorrupt)
	}
	return nil
}
