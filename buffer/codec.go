package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// Storage layout (all integers big-endian):
//
//	record key   'r' | seq uint64 | len(data) uint32                  (13 bytes)
//	record value version(1) | append time unix ns int64 | crc32c(data) | data
//	meta key     'm'
//	meta value   version(1) | lastSeq | head | count | bytes | crc32c of the preceding 33 bytes
//
// The payload length lives in the key so that acknowledging, dropping and
// reclaiming records never needs to read values; the sequence number comes
// first so that keys sort in FIFO order.
const (
	recordPrefix   = 'r'
	metaPrefix     = 'm'
	recordKeyLen   = 1 + 8 + 4
	recordHdrLen   = 1 + 8 + 4
	recordVersion  = 1
	metaVersion    = 1
	metaLen        = 1 + 8*4 + 4
	maxRecordBytes = 1<<32 - 1
)

// RecordOverhead is the fixed number of bytes every record costs against the
// quota on top of its payload (its key and value header).
const RecordOverhead = recordKeyLen + recordHdrLen

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var metaKey = []byte{metaPrefix}

// sentinelKey is a key under the record prefix that is not a record key
// (one byte too long); collect writes it briefly. Readers skip it.
var sentinelKey = []byte{recordPrefix, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// errCorrupt marks a record or metadata value that fails validation.
var errCorrupt = errors.New("corrupt")

func recordKey(seq uint64, n int) []byte {
	k := make([]byte, recordKeyLen)
	k[0] = recordPrefix
	binary.BigEndian.PutUint64(k[1:], seq)
	binary.BigEndian.PutUint32(k[9:], uint32(n))
	return k
}

// seekKey is the smallest key of a record with sequence number >= seq.
func seekKey(seq uint64) []byte {
	k := make([]byte, 9)
	k[0] = recordPrefix
	binary.BigEndian.PutUint64(k[1:], seq)
	return k
}

// parseRecordKey returns the sequence number and payload length in a
// record key.
func parseRecordKey(k []byte) (seq uint64, n int, err error) {
	if len(k) != recordKeyLen || k[0] != recordPrefix {
		return 0, 0, fmt.Errorf("record key %x: %w", k, errCorrupt)
	}
	return binary.BigEndian.Uint64(k[1:]), int(binary.BigEndian.Uint32(k[9:])), nil
}

func encodeRecordValue(t time.Time, data []byte) []byte {
	v := make([]byte, recordHdrLen+len(data))
	v[0] = recordVersion
	binary.BigEndian.PutUint64(v[1:], uint64(t.UnixNano()))
	binary.BigEndian.PutUint32(v[9:], crc32.Checksum(data, castagnoli))
	copy(v[recordHdrLen:], data)
	return v
}

// decodeRecord validates a stored record against its key and returns it.
// Data aliases v.
func decodeRecord(k, v []byte) (Record, error) {
	seq, n, err := parseRecordKey(k)
	if err != nil {
		return Record{}, err
	}
	if len(v) < recordHdrLen || v[0] != recordVersion {
		return Record{}, fmt.Errorf("record %d: bad header: %w", seq, errCorrupt)
	}
	data := v[recordHdrLen:]
	if len(data) != n {
		return Record{}, fmt.Errorf("record %d: length %d, key says %d: %w", seq, len(data), n, errCorrupt)
	}
	if crc32.Checksum(data, castagnoli) != binary.BigEndian.Uint32(v[9:]) {
		return Record{}, fmt.Errorf("record %d: checksum mismatch: %w", seq, errCorrupt)
	}
	t := time.Unix(0, int64(binary.BigEndian.Uint64(v[1:]))).UTC()
	return Record{Seq: seq, Time: t, Data: data}, nil
}

// recordTime reads only the append time of a record value.
func recordTime(v []byte) (time.Time, bool) {
	if len(v) < recordHdrLen || v[0] != recordVersion {
		return time.Time{}, false
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(v[1:]))), true
}

// meta is the persistent state of the queue.
type meta struct {
	lastSeq uint64 // highest sequence number ever assigned
	head    uint64 // every record with seq <= head is gone
	count   uint64 // records stored (seq in (head, lastSeq])
	bytes   uint64 // their cost: sum of len(data)+RecordOverhead
}

func encodeMeta(m meta) []byte {
	v := make([]byte, metaLen)
	v[0] = metaVersion
	binary.BigEndian.PutUint64(v[1:], m.lastSeq)
	binary.BigEndian.PutUint64(v[9:], m.head)
	binary.BigEndian.PutUint64(v[17:], m.count)
	binary.BigEndian.PutUint64(v[25:], m.bytes)
	binary.BigEndian.PutUint32(v[33:], crc32.Checksum(v[:33], castagnoli))
	return v
}

func decodeMeta(v []byte) (meta, error) {
	if len(v) != metaLen || v[0] != metaVersion {
		return meta{}, fmt.Errorf("metadata: bad length or version: %w", errCorrupt)
	}
	if crc32.Checksum(v[:33], castagnoli) != binary.BigEndian.Uint32(v[33:]) {
		return meta{}, fmt.Errorf("metadata: checksum mismatch: %w", errCorrupt)
	}
	m := meta{
		lastSeq: binary.BigEndian.Uint64(v[1:]),
		head:    binary.BigEndian.Uint64(v[9:]),
		count:   binary.BigEndian.Uint64(v[17:]),
		bytes:   binary.BigEndian.Uint64(v[25:]),
	}
	if m.head > m.lastSeq || m.count > m.lastSeq-m.head || m.count > m.bytes/RecordOverhead {
		return meta{}, fmt.Errorf("metadata: inconsistent totals (last %d head %d count %d bytes %d): %w", m.lastSeq, m.head, m.count, m.bytes, errCorrupt)
	}
	return m, nil
}

func recordCost(n int) uint64 { return uint64(n) + RecordOverhead }
