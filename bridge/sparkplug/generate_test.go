package sparkplug

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedCodeIsCurrent regenerates sparkplug_b.pb.go with Debian's
// protoc and protoc-gen-go built from the google.golang.org/protobuf
// version go.mod requires, and fails when the committed file differs (the
// .proto was edited without `go generate`, or the tools changed).
func TestGeneratedCodeIsCurrent(t *testing.T) {
	protoc, err := exec.LookPath("protoc")
	if err != nil {
		t.Fatalf("protoc not found (Debian package protobuf-compiler, installed by .ci/run): %v", err)
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go tool not found: %v", err)
	}
	dir := t.TempDir()
	plugin := filepath.Join(dir, "protoc-gen-go")
	build := exec.Command(goTool, "build", "-o", plugin, "google.golang.org/protobuf/cmd/protoc-gen-go")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build protoc-gen-go: %v\n%s", err, out)
	}
	gen := exec.Command(protoc, "--plugin=protoc-gen-go="+plugin, "--go_out="+dir, "--go_opt=paths=source_relative", "sparkplug_b.proto")
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("protoc: %v\n%s", err, out)
	}
	want, err := os.ReadFile(filepath.Join(dir, "sparkplug_b.pb.go"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("sparkplug_b.pb.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(want, got) {
		t.Errorf("sparkplug_b.pb.go is not what `go generate ./bridge/sparkplug` makes from sparkplug_b.proto; regenerate it (see generate.go)")
	}
}
