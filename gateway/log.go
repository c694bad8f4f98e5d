package gateway

import (
	"io"
	"log/slog"
	"os"

	"github.com/fieldgate/fieldgate/console"
)

// NewLogger builds the process logger from the `gateway.log` section; it
// also keeps the most recent lines for the console's Log page. Under
// systemd (JOURNAL_STREAM is set) text logs carry no timestamp, because
// journald stamps every line itself.
func NewLogger(cfg LogConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.Level)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	// The console's Log page shows the most recent lines.
	ring := console.NewLogRing(logRingSize)
	if cfg.Format == "json" {
		return slog.New(ring.Handler(slog.NewJSONHandler(w, opts)))
	}
	if os.Getenv("JOURNAL_STREAM") != "" {
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	return slog.New(ring.Handler(slog.NewTextHandler(w, opts)))
}
