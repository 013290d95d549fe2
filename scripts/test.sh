#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian 12 machine, as root: installs what is missing first (Debian packages,
# Node 24, npm packages, helm, the Go test peers; skipped when present), then `npm test` (typecheck, lint, import-cycle check, every test). Extra arguments go to
# `node --test` (e.g. a file or a --test-name-pattern).
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh
export PATH="$PWD/.tools/node/node_modules/node/bin:$PWD/.tools/bin:$PATH"
if [ $# -gt 0 ]; then
  npm run typecheck
  npm run lint
  node scripts/check-cycles.ts
  exec node --test --test-concurrency=1 --test-timeout=600000 "$@"
fi
exec npm test
