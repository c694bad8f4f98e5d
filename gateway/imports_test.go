package gateway

import (
	"fmt"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/fieldgate/fieldgate"

// allowed lists, per package of this module, the module packages it may
// import (DESIGN.md "Packages": dependencies point down the table, siblings
// never import each other).
var allowed = map[string][]string{
	"cmd/fieldgate":         {"gateway"},
	"gateway":               {"internal/durable", "broker", "bridge", "buffer", "console", "devices", "devices/modbus", "devices/serial", "devices/sim", "integrations/homeassistant"},
	"console":               {}, // reads the gateway's state through its own small interfaces
	"broker":                {"internal/durable"},
	"devices":               {},
	"devices/modbus":        {"devices"},
	"devices/serial":        {"devices"},
	"devices/sim":           {"devices"},
	"cmd/fieldgate-bench":   {}, // drives the binary from outside
	"cmd/fieldgate-package": {}, // builds binaries and .debs
	"buffer":                {"internal/durable"},
	"bridge":                {"buffer", "internal/durable"},
	"bridge/sparkplug":      {}, // Sparkplug B encoding, standalone
	"internal/crashfs":      {}, // a file system for power-cut tests
	"internal/durable":      {}, // directory syncs, used by every store

	"integrations/homeassistant": {"devices"},
}

// thirdParty says which package may use each third-party library.
var thirdParty = map[string][]string{
	"github.com/mochi-mqtt/server": {"broker"},
	"github.com/dgraph-io/badger":  {"buffer"},
	"github.com/eclipse/paho":      {"bridge"},
	"github.com/goburrow/modbus":   {"devices/modbus"},
	"go.bug.st/serial":             {"devices", "devices/modbus", "devices/serial"},
	"gopkg.in/yaml.v3":             {"gateway"},
	"github.com/prometheus":        {"gateway"},
	"github.com/coreos/go-systemd": {"gateway"},
	"github.com/hanwen/go-fuse":    {"internal/crashfs"},
}

// testOnly lists libraries tests may use as peers regardless of the rules.
var testOnly = []string{"github.com/mochi-mqtt/server", "github.com/eclipse/paho"}

// testSupport lists the module's packages any test may import.
var testSupport = []string{"internal/crashfs"}

func TestImportRules(t *testing.T) {
	for _, v := range checkImports(t, "..") {
		t.Error(v)
	}
}

// The checker itself catches a sibling import, an upward import and a
// third-party library used outside its package.
func TestImportRulesCatchViolations(t *testing.T) {
	got := checkImports(t, "testdata/badlayout")
	want := []string{
		"broker may not import bridge",
		"devices/sim may not import devices/modbus",
		"devices may not use github.com/mochi-mqtt/server/v2",
		"integrations/homeassistant may not import bridge",
	}
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || strings.Contains(g, w)
		}
		if !found {
			t.Errorf("violation %q not reported; got %q", w, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d violations, want %d: %q", len(got), len(want), got)
	}
}

// checkImports walks the module tree at root and returns every import that
// breaks the rules above.
func checkImports(t *testing.T, root string) []string {
	t.Helper()
	var bad []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (name == "testdata" || strings.HasPrefix(name, ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		pkg := filepath.ToSlash(rel)
		isTest := strings.HasSuffix(path, "_test.go")
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		ok, known := allowed[pkg]
		if !known {
			bad = append(bad, fmt.Sprintf("%s: package %q is not in the DESIGN.md table", path, pkg))
			return nil
		}
		for _, imp := range f.Imports {
			p := strings.Trim(imp.Path.Value, `"`)
			if strings.HasPrefix(p, module+"/") {
				dep := strings.TrimPrefix(p, module+"/")
				if dep != pkg && !slices.Contains(ok, dep) && !(isTest && slices.Contains(testSupport, dep)) {
					bad = append(bad, fmt.Sprintf("%s: %s may not import %s", path, pkg, dep))
				}
				continue
			}
			for lib, owners := range thirdParty {
				if !strings.HasPrefix(p, lib) || slices.Contains(owners, pkg) {
					continue
				}
				if isTest && hasPrefixAny(p, testOnly) {
					continue
				}
				bad = append(bad, fmt.Sprintf("%s: %s may not use %s (it belongs to %v)", path, pkg, p, owners))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return bad
}

func hasPrefixAny(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
