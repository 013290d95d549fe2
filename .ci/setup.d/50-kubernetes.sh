#!/usr/bin/env bash
# For the Kubernetes test (test/k8s, `npm run test:k8s`): a real cluster on namespace nodes. Its Debian packages (etcd,
# runc, the CNI plugins, …) are in .ci/setup.sh's list.
# - .tools/bin/kube: kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy in one binary,
#   built from k8s.io/kubernetes at the version test/go/kubernetes/go.mod pins (about 5 minutes cold on 2 cores).
# - .tools/bin/coredns: CoreDNS from its module (test/go/coredns), the cluster's DNS.
# A binary is rebuilt only when a source file of its module or this script is newer. Modules come from the Go module
# proxy, pinned by the committed go.sum (-mod=readonly fails on any drift), built with the machine's Go.
set -euo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/../.."

GO=$(command -v go || true)
[ -n "$GO" ] || GO=/usr/local/go/bin/go
if [ ! -x "$GO" ]; then
  echo "setup: Go is not installed (looked on PATH and at /usr/local/go/bin/go); cannot build Kubernetes" >&2
  exit 1
fi
export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false"
[ -n "${HOME:-}" ] || export HOME="$(getent passwd "$(id -u)" | cut -d: -f6)"

# build MODULE_DIR OUT LDFLAGS
build () {
  local src=$1 out=$2 ldflags=$3 tmp start
  if [ -x "$out" ] && [ -z "$(find "$src" "$SELF" -type f -newer "$out" -print -quit)" ]; then
    echo "setup: $out is up to date" >&2
    return 0
  fi
  mkdir -p "$(dirname "$out")"
  start=$(date +%s)
  echo "setup: building $out from $src with $("$GO" version)" >&2
  tmp="$out.tmp.$$"
  if ! (cd "$src" && CGO_ENABLED=0 "$GO" build -trimpath -ldflags "-s -w $ldflags" -o "$OLDPWD/$tmp" .); then
    rm -f "$tmp"
    return 1
  fi
  mv "$tmp" "$out"
  echo "setup: built $out in $(( $(date +%s) - start )) s" >&2
}

k8s_version="$(cd test/go/kubernetes && "$GO" list -m -f '{{.Version}}' k8s.io/kubernetes)"
minor="${k8s_version#v1.}"
minor="${minor%%.*}"
# What `kubectl version` and helm's kubeVersion checks see (upstream's build sets the same variables).
V=k8s.io/component-base/version
build test/go/kubernetes .tools/bin/kube "-X $V.gitVersion=$k8s_version -X $V.gitMajor=1 -X $V.gitMinor=$minor -X $V.gitTreeState=clean"
build test/go/coredns .tools/bin/coredns ""
