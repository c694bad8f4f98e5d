// Package buffer is fieldgate's durable FIFO: an append-only queue of opaque
// records stored in BadgerDB, knowing nothing of MQTT.
//
// Every record gets a sequence number (Seq) that is monotonic and never
// reused, also across restarts. A record has exactly one fate:
//
//   - it is acknowledged with [Queue.Ack] after it was delivered;
//   - it is dropped because the byte quota was reached under [DropOldest]
//     (reason "quota"), because it is older than [Config.MaxAge]
//     (reason "expired"), or because it failed its checksum (reason
//     "corrupt"). Every drop is counted in [Stats.Dropped] by reason.
//
// Durability: [Queue.Append] returns only once the record is fsync'd.
// Concurrent appends are group-committed: they share one badger transaction
// and one fsync. The commit is pipelined: the next batch is written to
// badger while the previous one is being synced, and one sync covers every
// batch written before it. The sync is the buffer's own fdatasync of
// badger's write-ahead logs (every *.mem file) and, when values went there,
// its value-log files, because badger's DB.Sync syncs only the newest of
// each: a record written just before a memtable or value-log rotation would
// otherwise not be on disk when Append returns (it would survive kill -9,
// not a power cut). Acks are persisted lazily (without fsync): after a crash,
// records acknowledged shortly before may be delivered again (duplicates),
// but an appended record is never lost unless the quota or expiry policy
// dropped it.
//
// Power cuts: the value log is synced before the WALs that point into it,
// and the store's directory after the files it names (badger syncs neither
// in that order). What a cut can still leave is repaired at Open instead of
// setting the store aside: records near the end whose value never reached
// the disk (never acknowledged) are dropped and counted as corrupt, empty
// log files are removed, and a level-0 table the MANIFEST names but whose
// directory entry was lost is forgotten (its WAL is still there).
//
// Startup never scans the whole store: a small metadata key, written in the
// same transaction as every change, holds the running totals. A store badger
// cannot open is moved aside (renamed to dir+".corrupt-<UTC timestamp>") and
// a fresh one is created so that the gateway still starts.
//
// Damage found later is handled per record: a record whose value fails its
// checksum or cannot be read is dropped (reason "corrupt") and the others are
// still delivered. Known limit: a damaged data block in the middle of an LSM
// table (bit rot) is not detected at Open; badger's iterator silently stops
// at it, so the records behind it in that table are not returned by Read.
//
// Memory: badger is tuned for a Raspberry Pi (8 MiB memtables, 4 MiB tables,
// no block cache, no compression, 2 compactors, values up to 4 KiB kept in
// the LSM tree). Badger accesses all its files through mmap; Run unmaps those pages
// every 25ms (MADV_DONTNEED: they stay in the kernel's page cache) so that
// they do not accumulate in the RSS. The process should also set a soft memory limit
// (GOMEMLIMIT=80MiB or debug.SetMemoryLimit): without it the Go heap grows
// to twice badger's transient allocations.
//
// Lifecycle: [Open] opens the store and starts nothing; [Queue.Run] performs
// expiry, deferred ack persistence and disk-space reclamation until its
// context is done; [Queue.Close] (called by whoever called Open, after Run
// returned) flushes and closes the store. All methods are safe for
// concurrent use.
package buffer
