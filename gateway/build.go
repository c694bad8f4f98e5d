package gateway

import (
	"fmt"
	"runtime"
)

// BuildInfo identifies the running binary: `fieldgate version`, the
// fieldgate_build_info metric and $SYS/broker/version show it.
type BuildInfo struct {
	Version string // release version, e.g. 1.2.0; "dev" for a local build
	Commit  string // source revision; "unknown" when not stamped
	Date    string // build (or commit) date, RFC 3339; "unknown" when not stamped
}

func (b BuildInfo) String() string {
	return fmt.Sprintf("%s (commit %s, built %s, %s)", b.Version, b.Commit, b.Date, runtime.Version())
}

// SetBuild tells the gateway which build it is. Call it before Run.
func (g *Gateway) SetBuild(b BuildInfo) { g.build = b }
