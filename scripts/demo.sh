#!/usr/bin/env bash
# Runs the three-node demo on a fresh Debian 12 machine, as root: installs what is missing first, then `npm run demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh
export PATH="$PWD/.tools/node/node_modules/node/bin:$PWD/.tools/bin:$PATH"
exec npm run demo
