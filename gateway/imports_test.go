package gateway

import (
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
	"cmd/fieldgate":  {"gateway"},
	"gateway":        {"broker", "bridge", "buffer", "devices", "devices/modbus", "devices/serial", "devices/sim"},
	"broker":         {},
	"devices":        {},
	"devices/modbus": {"devices"},
	"devices/serial": {"devices"},
	"devices/sim":    {"devices"},
	"buffer":         {},
	"bridge":         {"buffer"},
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
}

// testOnly lists libraries tests may use as peers regardless of the rules.
var testOnly = []string{"github.com/mochi-mqtt/server", "github.com/eclipse/paho"}

func TestImportRules(t *testing.T) {
	root := ".."
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); name == "testdata" || strings.HasPrefix(name, ".") && path != root {
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
			t.Errorf("%s: package %q is not in the DESIGN.md table", path, pkg)
			return nil
		}
		for _, imp := range f.Imports {
			p := strings.Trim(imp.Path.Value, `"`)
			if strings.HasPrefix(p, module+"/") {
				dep := strings.TrimPrefix(p, module+"/")
				if dep != pkg && !slices.Contains(ok, dep) {
					t.Errorf("%s: %s may not import %s", path, pkg, dep)
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
				t.Errorf("%s: %s may not use %s (it belongs to %v)", path, pkg, p, owners)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func hasPrefixAny(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
