package console

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// LogLine is one log record as the Log page shows it.
type LogLine struct {
	Seq   uint64    `json:"seq"`
	Time  time.Time `json:"time"`
	Level string    `json:"level"` // DEBUG, INFO, WARN, ERROR
	Msg   string    `json:"msg"`
	Attrs string    `json:"attrs"` // key=value pairs, as the text handler writes them
}

// LogRing keeps the most recent log lines in memory. It is fed by the
// handler that Handler returns and is safe for concurrent use.
type LogRing struct {
	mu    sync.Mutex
	lines []LogLine // capacity size; next is the write position once full
	next  int
	seq   uint64
	size  int
	sink  atomic.Pointer[func(LogLine)]
}

// NewLogRing returns a ring of the size most recent lines.
func NewLogRing(size int) *LogRing {
	return &LogRing{size: max(size, 1)}
}

func (r *LogRing) add(l LogLine) {
	r.mu.Lock()
	r.seq++
	l.Seq = r.seq
	if len(r.lines) < r.size {
		r.lines = append(r.lines, l)
	} else {
		r.lines[r.next] = l
		r.next = (r.next + 1) % r.size
	}
	r.mu.Unlock()
	if fn := r.sink.Load(); fn != nil {
		(*fn)(l)
	}
}

// Lines returns the lines at level min or above, oldest first, at most
// limit of them (the newest; limit ≤ 0: all).
func (r *LogRing) Lines(min slog.Level, limit int) []LogLine {
	r.mu.Lock()
	all := make([]LogLine, 0, len(r.lines))
	all = append(all, r.lines[r.next:]...)
	all = append(all, r.lines[:r.next]...)
	r.mu.Unlock()
	out := all[:0]
	for _, l := range all {
		var lv slog.Level
		if lv.UnmarshalText([]byte(l.Level)) == nil && lv >= min {
			out = append(out, l)
		}
	}
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out
}

// Handler returns a handler that passes every record to next and keeps a
// copy in the ring. It records exactly what next is enabled for.
func (r *LogRing) Handler(next slog.Handler) slog.Handler {
	return &ringHandler{next: next, ring: r}
}

type ringHandler struct {
	next   slog.Handler
	ring   *LogRing
	prefix string // attributes added with WithAttrs, formatted
	group  string // open group prefix, "g." form
}

// Ring returns the ring the handler feeds.
func (h *ringHandler) Ring() *LogRing { return h.ring }

func (h *ringHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h *ringHandler) Handle(ctx context.Context, rec slog.Record) error {
	err := h.next.Handle(ctx, rec)
	var b strings.Builder
	b.WriteString(h.prefix)
	rec.Attrs(func(a slog.Attr) bool {
		writeAttr(&b, h.group, a)
		return true
	})
	t := rec.Time
	if t.IsZero() {
		t = time.Now()
	}
	h.ring.add(LogLine{Time: t, Level: rec.Level.String(), Msg: rec.Message, Attrs: strings.TrimSpace(b.String())})
	return err
}

func (h *ringHandler) WithAttrs(as []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.prefix)
	for _, a := range as {
		writeAttr(&b, h.group, a)
	}
	return &ringHandler{next: h.next.WithAttrs(as), ring: h.ring, prefix: b.String(), group: h.group}
}

func (h *ringHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &ringHandler{next: h.next.WithGroup(name), ring: h.ring, prefix: h.prefix, group: h.group + name + "."}
}

func writeAttr(b *strings.Builder, group string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		g := group
		if a.Key != "" {
			g += a.Key + "."
		}
		for _, ga := range a.Value.Group() {
			writeAttr(b, g, ga)
		}
		return
	}
	v := a.Value.String()
	if strings.ContainsAny(v, " \"=") || v == "" {
		v = fmt.Sprintf("%q", v)
	}
	b.WriteString(" ")
	b.WriteString(group)
	b.WriteString(a.Key)
	b.WriteString("=")
	b.WriteString(v)
}
