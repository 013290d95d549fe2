#!/usr/bin/env bash
# The OCI distribution-spec conformance suite for test/integration/conformance/oci.test.ts, built from the Go module
# proxy into .tools/bin/:
#   oci-conformance         the current suite (test/go/conformance/go.mod pins it), built from a copy of the module
#                           with test/go/conformance/testdata/main.go in place of its main.go: one added call that
#                           keeps its report writer from crashing when push is disabled (see that file's header)
#   oci-conformance-legacy  the earlier ginkgo suite (test/go/conformance/legacy/go.mod pins it), `go test -c`
# Both module versions and every dependency are checked against the go.sum files next to those go.mod files.
# Idempotent: does nothing when both binaries were built from the current inputs (a stamp holds their hash).
set -euo pipefail
cd "$(dirname "$0")/../.."

GO="$(command -v go || true)"
[ -n "$GO" ] || GO=/usr/local/go/bin/go
if [ ! -x "$GO" ]; then
  echo "setup: go is not installed (needed to build the OCI conformance suite): install Go >= 1.24 on PATH" >&2
  exit 1
fi

SRC="$PWD/test/go/conformance"
TOOLS="$PWD/.tools"
BIN="$TOOLS/bin"
BUILD="$TOOLS/build/oci-conformance"
STAMP="$BIN/.oci-conformance.stamp"
MODULE=github.com/opencontainers/distribution-spec/conformance

inputs_hash () {
  { "$GO" version; cat "$0" "$SRC/go.mod" "$SRC/go.sum" "$SRC/testdata/main.go" "$SRC/legacy/go.mod" "$SRC/legacy/go.sum"; } | sha256sum | cut -d' ' -f1
}
want="$(inputs_hash)"
if [ -x "$BIN/oci-conformance" ] && [ -x "$BIN/oci-conformance-legacy" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then
  echo "setup: OCI conformance suite already at .tools/bin/oci-conformance{,-legacy}" >&2
  exit 0
fi

started=$SECONDS
mkdir -p "$BIN"
# Only these modules' own builds: no GOFLAGS from the caller (e.g. -mod=vendor) may change them.
export GOFLAGS=-mod=readonly GOTOOLCHAIN=local

# Current suite. Files in the module cache cannot be overlaid, so the verified module is copied and patched.
version="$(cd "$SRC" && "$GO" list -m -f '{{.Version}}' "$MODULE")"
dir="$(cd "$SRC" && "$GO" mod download -json "$MODULE" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[ -n "$dir" ] && [ -f "$dir/main.go" ] || { echo "setup: go mod download $MODULE@$version gave no source directory" >&2; exit 1; }
echo "setup: building the OCI conformance suite $version" >&2
rm -rf "$BUILD"
mkdir -p "$BUILD"
cp -R "$dir/." "$BUILD/"
chmod -R u+w "$BUILD"
cp "$SRC/testdata/main.go" "$BUILD/main.go"
# The suite reports its version as "commit"; a copy has no VCS stamp, so it is passed in.
(cd "$BUILD" && "$GO" build -trimpath -buildvcs=false -ldflags "-X main.Version=$version" -o "$BIN/oci-conformance.tmp" .)
mv "$BIN/oci-conformance.tmp" "$BIN/oci-conformance"
rm -rf "$BUILD"

# Legacy suite: a test package, compiled to a test binary.
legacy="$(cd "$SRC/legacy" && "$GO" list -m -f '{{.Version}}' "$MODULE")"
echo "setup: building the legacy OCI conformance suite $legacy" >&2
(cd "$SRC/legacy" && "$GO" test -c -trimpath -ldflags "-X $MODULE.Version=$legacy" -o "$BIN/oci-conformance-legacy.tmp" "$MODULE")
mv "$BIN/oci-conformance-legacy.tmp" "$BIN/oci-conformance-legacy"

echo "$want" > "$STAMP"
echo "setup: OCI conformance suites at .tools/bin/oci-conformance{,-legacy} ($((SECONDS - started)) s)" >&2
