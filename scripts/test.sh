#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian 12 machine, as root: installs what is missing first (Debian packages,
# Node 24, npm packages, helm, the Go test peers and containerd 2.x builds; skipped when present), then `npm test`
# (typecheck, lint, import-cycle check, every test on containerd 2.1, then every containerd-backed test again on
# containerd 1.6 and on the newest 2.x: scripts/run-tests.ts), then `npm run test:k8s` (the chart installed on a real
# 3-node Kubernetes: test/k8s). Extra arguments go to `node --test` (a file, a
# directory or a glob, or a --test-name-pattern), on the containerd SPEGEL_TEST_CONTAINERD names (default 2.1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh
export PATH="$PWD/.tools/node/node_modules/node/bin:$PWD/.tools/bin:$PATH"
if [ $# -gt 0 ]; then
  npm run typecheck
  npm run lint
  node scripts/check-cycles.ts
  # A directory stands for every test file below it (node --test takes files and globs, not directories).
  args=()
  for a in "$@"; do
    if [ -d "$a" ]; then args+=("${a%/}/**/*.test.ts"); else args+=("$a"); fi
  done
  exec node --test --test-concurrency=1 --test-timeout=600000 "${args[@]}"
fi
npm test
# The chart on a real 3-node Kubernetes (test/k8s): last, as it brings up a whole cluster.
exec npm run test:k8s
