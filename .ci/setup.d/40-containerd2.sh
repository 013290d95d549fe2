#!/usr/bin/env bash
# Builds containerd 2.x (test/go/containerd2: upstream's cmd/containerd with its builtin plugins, CRI included) into
# .tools/bin/containerd-<version>, the version being the one test/go/containerd2/go.mod pins (Debian's containerd is
# 1.x). Skips the build when the binary is newer than every source file and this script. Modules come from the Go
# module proxy, pinned by the committed go.sum (-mod=readonly fails on any drift); the machine's own Go is used
# (GOTOOLCHAIN=local). Without btrfs, devmapper and zfs snapshotters, and without cgo.
set -euo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/../.."

SRC=test/go/containerd2
MODULE=github.com/containerd/containerd/v2
GO=$(command -v go || true)
[ -n "$GO" ] || GO=/usr/local/go/bin/go
if [ ! -x "$GO" ]; then
  echo "setup: Go is not installed (looked on PATH and at /usr/local/go/bin/go); cannot build containerd 2" >&2
  exit 1
fi

# Only this module's own build: no GOFLAGS from the caller (e.g. -mod=vendor) may change it.
export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false"
# Go keeps its module and build caches under $HOME (reused across CI runs on one machine); CI may start without HOME.
[ -n "${HOME:-}" ] || export HOME="$(getent passwd "$(id -u)" | cut -d: -f6)"
version="$(cd "$SRC" && "$GO" list -m -f '{{.Version}}' "$MODULE")"
version="${version#v}"
OUT=.tools/bin/containerd-$version

if [ -x "$OUT" ] && [ -z "$(find "$SRC" "$SELF" -type f -newer "$OUT" -print -quit)" ]; then
  echo "setup: $OUT is up to date" >&2
  exit 0
fi

mkdir -p .tools/bin
start=$(date +%s)
echo "setup: building $OUT with $("$GO" version)" >&2
tmp="$OUT.tmp.$$"
trap 'rm -f "$tmp"' EXIT
# version.Version is what `containerd --version` and the Version API (`ctr version`) report; upstream's Makefile sets it
# the same way (its default is "<version>+unknown").
(cd "$SRC" && CGO_ENABLED=0 "$GO" build -trimpath -tags "no_btrfs no_devmapper no_zfs" \
  -ldflags "-s -w -X $MODULE/version.Version=$version" -o "$OLDPWD/$tmp" .)
mv "$tmp" "$OUT"
echo "setup: built $OUT in $(( $(date +%s) - start )) s" >&2
