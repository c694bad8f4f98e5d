#!/usr/bin/env bash
# Runs the arm64 build's unit tests under qemu-user (Debian qemu-user-static).
#
#   bash cmd/fieldgate-package/qemu-test.sh [PKG...]
#
# Cross-compiles the test binary of each package (CGO_ENABLED=0 GOARCH=arm64
# go test -c) and runs it with qemu-aarch64-static in the package directory,
# as `go test` would. The default packages are those whose tests need no
# peer (mosquitto, python, socat) and do not re-execute themselves: a test
# binary that starts a copy of itself needs binfmt_misc, which CI lacks.
# -test.short is passed; each package gets QEMU_TEST_TIMEOUT (default 150s).
# Prints one line per package with its wall time and a closing
# "N passed, N failed" line; exits 1 if any package failed.
set -euo pipefail

cd "$(dirname "$0")/../.."
if [ $# -gt 0 ]; then
	pkgs=("$@")
else
	pkgs=(./devices ./devices/modbus ./devices/serial ./buffer ./console)
fi
# Tests that cannot pass under qemu-user, by package:
# - buffer TestCrashRecovery and the TestPowerCut tests start copies of the
#   test binary (exec format error without binfmt_misc); the power-cut tests
#   also mount a FUSE file system, which qemu-user does not emulate;
# - devices/modbus TestRS485UnsupportedContinues wants the kernel's ENOTTY
#   for TIOCSRS485 on a pty; qemu-user answers ENOSYS to ioctls it does not
#   emulate.
declare -A skip=(
	[./buffer]='^(TestCrashRecovery|TestPowerCut.*)$'
	[./devices/modbus]='^TestRS485UnsupportedContinues$'
)
timeout=${QEMU_TEST_TIMEOUT:-150s}

qemu=$(command -v qemu-aarch64-static || true)
if [ -z "$qemu" ]; then
	echo "qemu-test: qemu-aarch64-static not found: apt-get install -y qemu-user-static" >&2
	exit 1
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

passed=0
failed=0
start=$SECONDS
for pkg in "${pkgs[@]}"; do
	bin="$out/$(echo "${pkg#./}" | tr / _).test"
	t0=$SECONDS
	if ! CGO_ENABLED=0 GOOS=linux GOARCH=arm64 go test -c -o "$bin" "$pkg"; then
		echo "FAIL  $pkg (arm64 build failed)"
		failed=$((failed + 1))
		continue
	fi
	t1=$SECONDS
	if [ ! -e "$bin" ]; then
		echo "ok    $pkg (no test files)"
		continue
	fi
	args=(-test.short -test.timeout="$timeout")
	if [ -n "${skip[$pkg]:-}" ]; then
		args+=(-test.skip="${skip[$pkg]}")
	fi
	if (cd "$pkg" && "$qemu" "$bin" "${args[@]}" >"$bin.log" 2>&1); then
		echo "ok    $pkg (build $((t1 - t0))s, run under qemu $((SECONDS - t1))s)"
		passed=$((passed + 1))
	else
		echo "FAIL  $pkg (build $((t1 - t0))s, run under qemu $((SECONDS - t1))s):"
		tail -n 40 "$bin.log" | sed 's/^/      /'
		failed=$((failed + 1))
	fi
done
echo "qemu-test: arm64 packages in $((SECONDS - start))s"
echo "qemu: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
