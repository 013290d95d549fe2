#!/usr/bin/env bash
# Builds containerd 2.x (test/go/containerd2*: upstream's cmd/containerd with its builtin plugins, CRI included) into
# .tools/bin/containerd-<version>, one binary per module, the version being the one its go.mod pins (Debian's
# containerd is 1.x): test/go/containerd2 pins the 2.1 line Talos ships, test/go/containerd2-latest the newest 2.x.
# Skips a build when the binary is newer than every source file of its module and this script. Modules come from the Go
# module proxy, pinned by the committed go.sum (-mod=readonly fails on any drift); the machine's own Go is used
# (GOTOOLCHAIN=local). Without btrfs, devmapper and zfs snapshotters, and without cgo.
set -euo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/../.."

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
build () {
  local src=$1 version out tmp start
  version="$(cd "$src" && "$GO" list -m -f '{{.Version}}' "$MODULE")"
  version="${version#v}"
  out=.tools/bin/containerd-$version
  if [ -x "$out" ] && [ -z "$(find "$src" "$SELF" -type f -newer "$out" -print -quit)" ]; then
    echo "setup: $out is up to date" >&2
    return 0
  fi
  mkdir -p .tools/bin
  start=$(date +%s)
  echo "setup: building $out from $src with $("$GO" version)" >&2
  tmp="$out.tmp.$$"
  # version.Version is what `containerd --version` and the Version API (`ctr version`) report; upstream's Makefile sets
  # it the same way (its default is "<version>+unknown").
  if ! (cd "$src" && CGO_ENABLED=0 "$GO" build -trimpath -tags "no_btrfs no_devmapper no_zfs" \
    -ldflags "-s -w -X $MODULE/version.Version=$version" -o "$OLDPWD/$tmp" .); then
    rm -f "$tmp"
    return 1
  fi
  mv "$tmp" "$out"
  echo "setup: built $out in $(( $(date +%s) - start )) s" >&2
}

for src in test/go/containerd2*/; do
  build "${src%/}"
done
