package main

import (
	"bytes"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// qemu runs the arm64 fieldgate binary under qemu-aarch64-static in the
// module root and returns its output and exit code.
func qemu(t *testing.T, args ...string) (string, int) {
	t.Helper()
	q := requireTool(t, "qemu-aarch64-static")
	arts := artifacts(t)
	cmd := exec.Command(q, append([]string{arts["arm64"].Binary}, args...)...)
	cmd.Dir = moduleRoot
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &exit):
		return out.String(), exit.ExitCode()
	}
	t.Fatalf("qemu-aarch64-static %v: %v\n%s", args, err, out.Bytes())
	return "", 0
}

// TestArm64UnderQemu runs the packaged arm64 binary: its version, checks of
// the demo and the packaged example configurations, and of an invalid one
// (exit code 1).
func TestArm64UnderQemu(t *testing.T) {
	out, code := qemu(t, "version")
	if want := "fieldgate " + testVersion + " (commit "; code != 0 || !strings.HasPrefix(out, want) {
		t.Errorf("version: exit %d, output %q; want 0, %q", code, out, want)
	}

	out, code = qemu(t, "check", "--config", "configs/demo.yaml")
	if code != 0 {
		t.Errorf("check --config configs/demo.yaml: exit %d, want 0\n%s", code, out)
	}

	shipped := defaultConfig(moduleRoot)
	out, code = qemu(t, "check", "--config", shipped)
	if code != 0 {
		t.Errorf("check --config %s (the packaged example): exit %d, want 0\n%s", shipped, code, out)
	}

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	write(t, bad, "gateway:\n  no_such_key: 1\n")
	out, code = qemu(t, "check", "--config", bad)
	if code != 1 || !strings.Contains(out, "no_such_key") {
		t.Errorf("check of an unknown key: exit %d, output %q; want exit 1 naming the key", code, out)
	}
}
