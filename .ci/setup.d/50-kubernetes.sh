#!/usr/bin/env bash
# For the Kubernetes test (test/k8s, `npm run test:k8s`): a real cluster on namespace nodes.
# - Debian packages: etcd, runc, the CNI plugins, conntrack (kube-proxy), busybox-static (the test images' userland).
# - .tools/bin/kube: kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy in one binary,
#   built from k8s.io/kubernetes at the version test/go/kubernetes/go.mod pins (about 5 minutes cold on 2 cores).
# - .tools/bin/coredns: CoreDNS from its module (test/go/coredns), the cluster's DNS.
# A binary is rebuilt only when a source file of its module or this script is newer. Modules come from the Go module
# proxy, pinned by the committed go.sum (-mod=readonly fails on any drift), built with the machine's Go.
set -euo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/../.."

APT_PACKAGES=(etcd-server runc containernetworking-plugins conntrack iptables busybox-static util-linux)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The test runs its own etcd on a free port.
systemctl stop etcd >/dev/null 2>&1 || true

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
