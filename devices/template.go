package devices

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// A topic template is literal text with {name} variables: {gateway},
// {device}, {point} and the device's `vars`. There is no escaping: '{' and
// '}' cannot appear literally (they are not useful in MQTT topics).
type template struct {
	parts []tmplPart
}

type tmplPart struct {
	lit  string // literal text, when name is ""
	name string // variable name
}

var varName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// parseTemplate splits s into literals and variables. It rejects an empty
// template, unbalanced braces and invalid variable names.
func parseTemplate(s string) (*template, error) {
	if s == "" {
		return nil, errors.New("empty topic template")
	}
	t := &template{}
	rest := s
	for rest != "" {
		open := strings.IndexAny(rest, "{}")
		if open < 0 {
			t.parts = append(t.parts, tmplPart{lit: rest})
			break
		}
		if rest[open] == '}' {
			return nil, fmt.Errorf("unbalanced '}' at offset %d", len(s)-len(rest)+open)
		}
		if open > 0 {
			t.parts = append(t.parts, tmplPart{lit: rest[:open]})
		}
		closeAt := strings.IndexAny(rest[open+1:], "{}")
		if closeAt < 0 || rest[open+1+closeAt] != '}' {
			return nil, fmt.Errorf("unclosed '{' at offset %d", len(s)-len(rest)+open)
		}
		name := rest[open+1 : open+1+closeAt]
		if !varName.MatchString(name) {
			return nil, fmt.Errorf("invalid variable name {%s}", name)
		}
		t.parts = append(t.parts, tmplPart{name: name})
		rest = rest[open+1+closeAt+1:]
	}
	return t, nil
}

// vars returns the variable names in order of appearance.
func (t *template) vars() []string {
	var names []string
	for _, p := range t.parts {
		if p.name != "" {
			names = append(names, p.name)
		}
	}
	return names
}

// expand substitutes every variable with lookup(name). Unknown names have
// been rejected by checkTemplate before expand is called.
func (t *template) expand(lookup func(name string) string) string {
	var b strings.Builder
	for _, p := range t.parts {
		if p.name == "" {
			b.WriteString(p.lit)
		} else {
			b.WriteString(lookup(p.name))
		}
	}
	return b.String()
}

// expandRoot expands the template up to the topic level that holds the
// first {point} and returns that prefix without the trailing '/'. ok is false
// when the template has no {point} or {point} is in the first level.
func (t *template) expandRoot(lookup func(name string) string) (root string, ok bool) {
	var b strings.Builder
	for _, p := range t.parts {
		if p.name == "point" {
			s := b.String()
			i := strings.LastIndexByte(s, '/')
			if i <= 0 {
				return "", false
			}
			return s[:i], true
		}
		if p.name == "" {
			b.WriteString(p.lit)
		} else {
			b.WriteString(lookup(p.name))
		}
	}
	return "", false
}

// checkTopic reports why topic cannot be a topic the devices package
// publishes to (and subscribes to with "/set" appended).
func checkTopic(topic string) error {
	switch {
	case topic == "":
		return errors.New("expands to an empty topic")
	case strings.ContainsAny(topic, "+#\x00"):
		return fmt.Errorf("topic %q contains a wildcard or NUL", topic)
	case strings.HasPrefix(topic, "$"):
		return fmt.Errorf("topic %q starts with '$' (reserved for the broker)", topic)
	case strings.HasPrefix(topic, "/") || strings.HasSuffix(topic, "/") || strings.Contains(topic, "//"):
		return fmt.Errorf("topic %q has an empty level", topic)
	case len(topic) > 65535-16:
		return fmt.Errorf("topic is too long (%d bytes)", len(topic))
	}
	return nil
}
