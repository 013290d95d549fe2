#!/usr/bin/env bash
# Builds the Go libp2p DHT test peer (test/go/dhtpeer, go-libp2p + go-libp2p-kad-dht with Spegel's settings) into
# .tools/bin/dhtpeer for test/integration/p2p/go-peer.test.ts. Skips the build when the binary is newer than every
# source file and this script. Modules come from the Go module proxy, pinned by the committed go.sum (-mod=readonly
# fails on any drift); the machine's own Go is used (GOTOOLCHAIN=local).
set -euo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/../.."

SRC=test/go/dhtpeer
OUT=.tools/bin/dhtpeer
GO=$(command -v go || true)
[ -n "$GO" ] || GO=/usr/local/go/bin/go
if [ ! -x "$GO" ]; then
  echo "setup: Go is not installed (looked on PATH and at /usr/local/go/bin/go); cannot build $OUT" >&2
  exit 1
fi

if [ -x "$OUT" ] && [ -z "$(find "$SRC" "$SELF" -type f -newer "$OUT" -print -quit)" ]; then
  echo "setup: $OUT is up to date" >&2
  exit 0
fi

mkdir -p .tools/bin
# Go keeps its module and build caches under $HOME (reused across CI runs on one machine); CI may start without HOME.
[ -n "${HOME:-}" ] || export HOME="$(getent passwd "$(id -u)" | cut -d: -f6)"
start=$(date +%s)
echo "setup: building $OUT with $("$GO" version)" >&2
tmp="$OUT.tmp.$$"
trap 'rm -f "$tmp"' EXIT
(cd "$SRC" && GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 "$GO" build -trimpath -o "$OLDPWD/$tmp" .)
mv "$tmp" "$OUT"
echo "setup: built $OUT in $(( $(date +%s) - start )) s" >&2
