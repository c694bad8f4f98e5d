package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Problem is one thing wrong with a configuration file: where (a YAML path
// such as "devices[2].points[5].address" and its line, 0 when unknown) and
// what.
type Problem struct {
	Path string
	Line int
	Msg  string
}

func (p Problem) String() string {
	switch {
	case p.Path == "" && p.Line == 0:
		return p.Msg
	case p.Path == "":
		return fmt.Sprintf("line %d: %s", p.Line, p.Msg)
	case p.Line == 0:
		return fmt.Sprintf("%s: %s", p.Path, p.Msg)
	}
	return fmt.Sprintf("%s (line %d): %s", p.Path, p.Line, p.Msg)
}

// ConfigError lists every problem found in a configuration file.
type ConfigError struct {
	File     string
	Problems []Problem
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d problem(s):", e.File, len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// positions maps YAML paths to the lines they are written on, so problems
// found after decoding can name their line.
type positions struct {
	lines map[string]int // path → line of the key (or the sequence item)
	byKey map[lineKey]string
	value map[int]string // line → path of a scalar value on that line
	// scalars holds every scalar value by its path; nodes every scalar and
	// collection by the line it starts on, in document order (outermost
	// first), so a type error quoting a value finds its key.
	scalars map[string]string
	nodes   map[int][]posNode
}

// posNode is one YAML value node and its path.
type posNode struct {
	path  string
	kind  yaml.Kind
	value string
}

type lineKey struct {
	line int
	key  string
}

func indexPositions(root *yaml.Node) *positions {
	p := &positions{lines: map[string]int{}, byKey: map[lineKey]string{}, value: map[int]string{},
		scalars: map[string]string{}, nodes: map[int][]posNode{}}
	if root == nil {
		return p
	}
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	p.walk(n, "")
	return p
}

func (p *positions) walk(n *yaml.Node, path string) {
	p.nodes[n.Line] = append(p.nodes[n.Line], posNode{path: path, kind: n.Kind, value: n.Value})
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			child := k.Value
			if path != "" {
				child = path + "." + k.Value
			}
			p.lines[child] = k.Line
			p.byKey[lineKey{k.Line, k.Value}] = child
			p.walk(v, child)
		}
	case yaml.SequenceNode:
		for i, v := range n.Content {
			child := fmt.Sprintf("%s[%d]", path, i)
			p.lines[child] = v.Line
			p.walk(v, child)
		}
	case yaml.ScalarNode, yaml.AliasNode:
		if _, seen := p.value[n.Line]; !seen {
			p.value[n.Line] = path
		}
		if n.Kind == yaml.ScalarNode {
			p.scalars[path] = n.Value
		}
	}
}

// line returns the line of path, or of its nearest ancestor written in the
// file (a missing key is reported where its parent is).
func (p *positions) line(path string) int {
	for path != "" {
		if l, ok := p.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

var (
	unknownField = regexp.MustCompile(`^line (\d+): field (\S+) not found in type (\S+)$`)
	lineMsg      = regexp.MustCompile(`^line (\d+): (.*)$`)
)

// decodeStrict decodes data into out, rejecting unknown keys, and returns
// every problem yaml.v3 reports, with paths and lines, plus the position
// index for later validation errors.
//
// yaml.v3 aborts the whole decode at the first value whose UnmarshalText
// fails (sizes such as "256MiB"), so such a value is reported, removed from
// the document and the rest decoded again, until no such value remains.
func decodeStrict(data []byte, out any) (*positions, []Problem) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, []Problem{syntaxProblemAt(data, err)}
	}
	orig := indexPositions(&root)
	var probs []Problem
	cur := data
	for attempt := 0; attempt < 50; attempt++ {
		var curRoot yaml.Node
		if err := yaml.Unmarshal(cur, &curRoot); err != nil {
			return orig, append(probs, syntaxProblem(err))
		}
		curPos := indexPositions(&curRoot)
		reflect.ValueOf(out).Elem().SetZero()
		dec := yaml.NewDecoder(bytes.NewReader(cur))
		dec.KnownFields(true)
		err := dec.Decode(out)
		if err == nil || errors.Is(err, io.EOF) {
			break
		}
		var te *yaml.TypeError
		if errors.As(err, &te) {
			probs = append(probs, typeProblems(te, curPos, orig)...)
			break
		}
		path, ok := removeValue(&curRoot, err.Error())
		if !ok {
			probs = append(probs, Problem{Msg: err.Error()})
			break
		}
		probs = append(probs, Problem{Path: path, Line: orig.line(path), Msg: strings.TrimPrefix(err.Error(), "yaml: ")})
		if cur, err = yaml.Marshal(&curRoot); err != nil {
			break
		}
	}
	sortProblems(probs)
	return orig, probs
}

// typeProblems turns yaml.v3's per-line messages about the current document
// into problems with paths and lines of the original file.
func typeProblems(te *yaml.TypeError, cur, orig *positions) []Problem {
	var probs []Problem
	for _, msg := range te.Errors {
		if m := unknownField.FindStringSubmatch(msg); m != nil {
			line, _ := strconv.Atoi(m[1])
			path := cur.byKey[lineKey{line, m[2]}]
			msg := fmt.Sprintf("unknown key %q", m[2])
			if k := didYouMean(m[2], m[3]); k != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", k)
			}
			probs = append(probs, Problem{Path: path, Line: orig.line(path), Msg: msg})
			continue
		}
		if m := lineMsg.FindStringSubmatch(msg); m != nil {
			line, _ := strconv.Atoi(m[1])
			path, plain, ok := plainType(m[2], line, cur)
			if !ok {
				path, plain = cur.value[line], m[2]
			}
			probs = append(probs, Problem{Path: path, Line: orig.line(path), Msg: plain})
			continue
		}
		probs = append(probs, Problem{Msg: msg})
	}
	return probs
}

// removeValue finds the mapping entry whose scalar value the decode error
// quotes, deletes it from the document and returns its path.
func removeValue(root *yaml.Node, msg string) (string, bool) {
	var found string
	var walk func(n *yaml.Node, path string) bool
	walk = func(n *yaml.Node, path string) bool {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				if walk(c, path) {
					return true
				}
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				child := k.Value
				if path != "" {
					child = path + "." + k.Value
				}
				if v.Kind == yaml.ScalarNode && v.Value != "" && (strings.Contains(msg, strconv.Quote(v.Value)) || strings.Contains(msg, "`"+v.Value+"`")) {
					found = child
					n.Content = append(n.Content[:i], n.Content[i+2:]...)
					return true
				}
				if walk(v, child) {
					return true
				}
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				if walk(c, fmt.Sprintf("%s[%d]", path, i)) {
					return true
				}
			}
		}
		return false
	}
	if walk(root, "") {
		return found, true
	}
	return "", false
}

func syntaxProblem(err error) Problem {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := lineMsg.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return Problem{Line: line, Msg: m[2]}
	}
	return Problem{Msg: msg}
}

func sortProblems(probs []Problem) {
	sort.SliceStable(probs, func(i, j int) bool {
		if probs[i].Line != probs[j].Line {
			// problems without a line go last
			if probs[i].Line == 0 || probs[j].Line == 0 {
				return probs[j].Line == 0
			}
			return probs[i].Line < probs[j].Line
		}
		return false
	})
}
