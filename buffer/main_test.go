package buffer

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashVerifyEnv) != "" {
		verifyChild()
		return
	}
	if os.Getenv(crashChildEnv) != "" {
		crashChild()
		return
	}
	if phase := os.Getenv(rssChildEnv); phase != "" {
		rssChild(phase)
		return
	}
	goleak.VerifyTestMain(m)
}
