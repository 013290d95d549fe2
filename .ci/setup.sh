#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian 12 machine (run as root):
# Debian packages for the real components the tests drive, and Node 24 from the npm registry.
# Safe to run again; prints the PATH line to use afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

# The last line is for the Kubernetes test (test/k8s): etcd, runc, the CNI plugins, conntrack and iptables for
# kube-proxy, busybox-static for the test images' userland.
APT_PACKAGES=(containerd docker-registry skopeo iproute2 prometheus chromium curl ca-certificates openssl
  etcd-server runc containernetworking-plugins conntrack iptables busybox-static util-linux)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = 'install ok installed' ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian packages start their own daemons; the tests run their own instances with private sockets,
# so the system-wide ones are stopped to keep ports and CPU free (ignored where systemd is absent).
for svc in containerd docker-registry prometheus prometheus-node-exporter etcd; do
  systemctl stop "$svc" >/dev/null 2>&1 || true
done

NODE_DIR="$PWD/.tools/node"
if [ ! -x "$NODE_DIR/node_modules/node/bin/node" ] || ! "$NODE_DIR/node_modules/node/bin/node" -e 'process.exit(+process.versions.node.split(".")[0] >= 24 ? 0 : 1)'; then
  echo "setup: fetching Node 24 from the npm registry" >&2
  mkdir -p "$NODE_DIR"
  npm install --silent --no-save --no-package-lock --prefix "$NODE_DIR" node@24 >&2
fi
export PATH="$NODE_DIR/node_modules/node/bin:$PATH"
echo "setup: node $(node --version), npm $(npm --version)" >&2
# npm ci empties node_modules first; skip it when the installed tree already matches the lock file.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] || [ package.json -nt node_modules/.package-lock.json ]; then
  npm ci --silent --no-audit --no-fund >&2
fi

# Extra test tooling (Go test peers, helm, …): each part installs itself from its own script, idempotently.
for part in .ci/setup.d/*.sh; do
  [ -e "$part" ] || continue
  echo "setup: $(basename "$part")" >&2
  bash "$part"
done
