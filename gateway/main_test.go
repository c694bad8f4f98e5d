package gateway

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine a Gateway starts is gone when Run returns.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// badger's and glog's process-wide background goroutines.
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreTopFunction("github.com/dgraph-io/ristretto/v2/z.(*AllocatorPool).freeupAllocators"),
	)
}
