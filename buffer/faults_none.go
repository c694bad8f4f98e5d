//go:build !fieldgate_faults

package buffer

// injectedSyncFault is nil: fault injection exists only in builds tagged
// fieldgate_faults (see faults_inject.go).
func injectedSyncFault() func(dir string) error { return nil }
