//go:build !linux

package buffer

// storeSyncer outside Linux leaves syncing to badger's DB.Sync (see
// sync_linux.go for what that misses around log rotations).
type storeSyncer struct{}

func newStoreSyncer(string) *storeSyncer { return &storeSyncer{} }

func (s *storeSyncer) sync(bool) (bool, error) { return false, nil }

func (s *storeSyncer) close() {}
