//go:build !linux

package buffer

// trimMappings is a no-op outside Linux.
func trimMappings(string) int64 { return 0 }

// fileRSS is unknown outside Linux.
func fileRSS() (int64, bool) { return 0, false }
