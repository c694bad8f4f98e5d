package serial

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/fieldgate/fieldgate/devices"
)

// Reasons a line is skipped; they are the keys of LineStats.
var (
	errEmpty       = errors.New("empty line")
	errInvalidUTF8 = errors.New("invalid UTF-8")
	errGarbage     = errors.New("control characters in line")
	errNoMatch     = errors.New("line does not match the parser")
)

// framer splits a byte stream into lines at a terminator, bounding line
// length. It is not safe for concurrent use.
type framer struct {
	term    []byte
	max     int
	buf     []byte
	discard bool // inside an over-long line: drop bytes up to the next terminator
	stats   *counters
}

func newFramer(term string, max int, st *counters) *framer {
	return &framer{term: []byte(term), max: max, stats: st}
}

// feed appends b and calls line for every complete line (terminator
// removed). Over-long lines are counted and dropped whole.
func (f *framer) feed(b []byte, line func([]byte)) {
	f.buf = append(f.buf, b...)
	for {
		i := bytes.Index(f.buf, f.term)
		if i < 0 {
			break
		}
		l := f.buf[:i]
		rest := f.buf[i+len(f.term):]
		switch {
		case f.discard:
			f.discard = false
		case len(l) > f.max:
			f.stats.tooLong.Add(1)
		default:
			line(l)
		}
		f.buf = append(f.buf[:0], rest...)
	}
	if !f.discard && len(f.buf) > f.max {
		f.stats.tooLong.Add(1)
		f.discard = true
	}
	if f.discard {
		// Keep only what could be the start of a terminator.
		keep := min(len(f.buf), len(f.term)-1)
		f.buf = append(f.buf[:0], f.buf[len(f.buf)-keep:]...)
	}
}

// flush drops an unterminated line (the port closed or went quiet), counting
// it as partial.
func (f *framer) flush() {
	if len(f.buf) > 0 && !f.discard {
		f.stats.partial.Add(1)
	}
	f.buf = f.buf[:0]
	f.discard = false
}

// parser turns a line into readings of the device's points.
type parser struct {
	re     *regexp.Regexp
	json   bool
	kv     bool
	points map[string]*devices.Point
}

func newParser(dev *devices.Device) (*parser, error) {
	cfg := dev.Config.Parse
	if cfg == nil {
		return nil, errors.New("no parse configuration")
	}
	p := &parser{json: cfg.JSON, kv: cfg.KV, points: map[string]*devices.Point{}}
	for _, pt := range dev.Points {
		key := pt.Config.Key
		if key == "" {
			key = pt.Name()
		}
		p.points[key] = pt
	}
	if cfg.Regex != "" {
		re, err := regexp.Compile(cfg.Regex)
		if err != nil {
			return nil, fmt.Errorf("parse.regex: %w", err)
		}
		p.re = re
	}
	return p, nil
}

// cleanLine trims a trailing "\r" and rejects lines that are not text.
func cleanLine(b []byte) (string, error) {
	b = bytes.TrimRight(b, "\r")
	if len(bytes.TrimSpace(b)) == 0 {
		return "", errEmpty
	}
	if !utf8.Valid(b) {
		return "", errInvalidUTF8
	}
	for _, c := range b {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return "", errGarbage
		}
	}
	return string(b), nil
}

// parse returns the values of the points found in line (point → raw value).
func (p *parser) parse(line string) (map[*devices.Point]any, error) {
	out := map[*devices.Point]any{}
	switch {
	case p.re != nil:
		m := p.re.FindStringSubmatchIndex(line)
		if m == nil {
			return nil, errNoMatch
		}
		for i, name := range p.re.SubexpNames() {
			pt := p.points[name]
			if pt == nil || m[2*i] < 0 {
				continue
			}
			out[pt] = textValue(line[m[2*i]:m[2*i+1]])
		}
	case p.json:
		dec := json.NewDecoder(strings.NewReader(line))
		dec.UseNumber()
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil || dec.More() {
			return nil, errNoMatch
		}
		for k, v := range obj {
			pt := p.points[k]
			if pt == nil {
				continue
			}
			if val, ok := jsonValue(v); ok {
				out[pt] = val
			}
		}
	case p.kv:
		for _, f := range strings.FieldsFunc(line, func(r rune) bool { return r == ' ' || r == '\t' || r == ',' || r == ';' }) {
			k, v, ok := strings.Cut(f, "=")
			if !ok {
				continue
			}
			if pt := p.points[k]; pt != nil && v != "" {
				out[pt] = textValue(v)
			}
		}
	}
	if len(out) == 0 {
		return nil, errNoMatch
	}
	return out, nil
}

// textValue converts sensor text: integers → int64, other numbers →
// float64, true/false → bool, anything else stays a string.
func textValue(s string) any {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
		return f
	}
	switch strings.ToLower(s) {
	case "true":
		return true
	case "false":
		return false
	}
	return s
}

func jsonValue(v any) (any, bool) {
	switch x := v.(type) {
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n, true
		}
		if f, err := x.Float64(); err == nil && !math.IsInf(f, 0) {
			return f, true
		}
	case bool:
		return x, true
	case string:
		return x, true
	}
	return nil, false
}

// quoteLine shows a received line in a log message: escaped, cut after 60
// bytes, between backquotes.
func quoteLine(b []byte) string {
	const max = 60
	more := ""
	if len(b) > max {
		b, more = b[:max], "…"
	}
	q := strconv.Quote(string(b))
	return "`" + q[1:len(q)-1] + more + "`"
}

// hint says what to check when no line matches.
func (p *parser) hint() string {
	switch {
	case p.re != nil:
		return "check parse.regex against it (named groups are point names)"
	case p.json:
		return "each line must be one JSON object whose keys are point names (or their key:)"
	default:
		return "kv lines are key=value pairs; keys are point names, or map one with key: on the point"
	}
}
