package gateway

import (
	"bytes"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// yaml.v3 type errors: "cannot unmarshal !!str `abc` into float64" (long
// values are cut to 7 characters and "...").
var typeMsg = regexp.MustCompile("^cannot unmarshal !!(\\w+)(?: `(.*)`)? into (.+)$")

// plainType rewrites a yaml.v3 type error about a value on line (of the
// current document) into plain words, and finds the path of that value.
// ok is false when msg is not a type error.
func plainType(msg string, line int, cur *positions) (path, plain string, ok bool) {
	m := typeMsg.FindStringSubmatch(msg)
	if m == nil {
		return "", "", false
	}
	tag, quoted, goType := m[1], m[2], strings.TrimLeft(m[3], "*")
	path = cur.value[line]
	for _, n := range cur.nodes[line] {
		if tag == "map" && n.kind == yaml.MappingNode || tag == "seq" && n.kind == yaml.SequenceNode {
			path = n.path
			break
		}
		if n.kind == yaml.ScalarNode && quoted != "" && (n.value == quoted || strings.HasSuffix(quoted, "...") && strings.HasPrefix(n.value, strings.TrimSuffix(quoted, "..."))) {
			path = n.path
			quoted = n.value
			break
		}
	}
	var what, got string
	switch tag {
	case "map":
		got = ", not a mapping (key: value)"
	case "seq":
		got = ", not a list"
	default:
		what = strconv.Quote(quoted) + " "
	}
	var rule string
	switch {
	case goType == "time.Duration":
		rule = "must be a duration, e.g. 2s, 500ms or 5m"
		if _, err := strconv.ParseFloat(quoted, 64); err == nil {
			rule = "needs a unit, e.g. " + quoted + "s, 500ms or 5m"
		} else if n, err := strconv.Atoi(strings.TrimSuffix(quoted, "d")); err == nil && strings.HasSuffix(quoted, "d") {
			rule = fmt.Sprintf("must be a duration in h, m, s or ms: there are no days, write %dh", 24*n)
		}
	case strings.HasPrefix(goType, "int") || strings.HasPrefix(goType, "uint") || strings.HasPrefix(goType, "float"):
		rule = "must be a number"
	case goType == "bool":
		rule = "must be true or false"
	case goType == "string":
		rule = "must be a single value (quote it if it contains ': ' or starts with '{', '[', '*' or '&')"
	case strings.HasPrefix(goType, "[]"):
		rule = "must be a list (- item, or [a, b])"
	default: // a map or a struct: a section or an entry of a list
		rule = "must be a mapping (key: value)"
	}
	plain = what + rule + got
	return path, plain, true
}

// syntaxProblemAt turns a YAML syntax error into a problem at the line where
// the mistake is. yaml.v3 names the line where the enclosing block starts
// (its "context"), which may be far above the wrong line, so the document is
// cut after each line from there on: the first prefix that fails with the
// same message ends on the wrong line.
func syntaxProblemAt(data []byte, err error) (p Problem) {
	p = syntaxProblem(err)
	defer func() {
		for cause, hint := range syntaxHints {
			if strings.Contains(p.Msg, cause) {
				p.Msg += " (" + hint + ")"
				break
			}
		}
	}()
	if p.Line == 0 {
		return p
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	for n := p.Line; n <= len(lines); n++ {
		var probe yaml.Node
		perr := yaml.Unmarshal(bytes.Join(lines[:n], nil), &probe)
		if perr == nil {
			continue
		}
		if q := syntaxProblem(perr); q.Msg == p.Msg {
			p.Line = n
		}
		break
	}
	return p
}

// syntaxHints say in plain words what usually causes a YAML syntax error.
var syntaxHints = map[string]string{
	"tab character":                  "indent with spaces, YAML does not allow tabs",
	"did not find expected key":      "check the indentation of this line against the keys above it",
	"did not find expected '-'":      "check the indentation of this line against the list above it",
	"mapping values are not allowed": "a ':' where no key can start: check the indentation, or quote a value that contains ': '",
	"did not find expected ',' or":   "a '{' or '[' that is not closed on this line",
	"found unexpected end of stream": "a quote or bracket opened here is never closed",
	"could not find expected ':'":    "a key without ':', or a quote that is not closed",
	"already defined":                "the same key twice in one mapping",
}

// problemHints add what to do to problems whose cause is a common slip.
var problemHints = []struct{ cause, hint string }{
	{"missing port in address", "write host:port, e.g. 0.0.0.0:1883"},
	{"not a bcrypt hash", "password_hash takes the hash that `fieldgate passwd` prints, not the password itself"},
}

func withHint(msg string) string {
	for _, h := range problemHints {
		if strings.Contains(msg, h.cause) && !strings.Contains(msg, h.hint) {
			return msg + " (" + h.hint + ")"
		}
	}
	return msg
}

// configKeys maps the Go type names that yaml.v3 puts in its "field x not
// found in type T" errors to the keys T accepts.
func configKeys() map[string][]string {
	out := map[string][]string{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || out[t.String()] != nil {
			return
		}
		keys := []string{}
		out[t.String()] = keys
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if !f.IsExported() || name == "" || name == "-" {
				continue
			}
			keys = append(keys, name)
			walk(f.Type)
		}
		out[t.String()] = keys
	}
	walk(reflect.TypeOf(Config{}))
	return out
}

// didYouMean returns the key of typ closest to key (at most 2 edits, or
// the same letters in another order), or "".
func didYouMean(key, typ string) string {
	best, bestD := "", 3
	for _, k := range configKeys()[typ] {
		if d := editDistance(key, k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
