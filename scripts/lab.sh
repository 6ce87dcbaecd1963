#!/usr/bin/env bash
# The whole lab, natively (no Docker): installs what the lab needs and is missing, builds when
# the sources changed since the last build, starts nats-server, redis-server and every service
# (hca0.., and kvm0.. with --kvm), serves the lab API for `mmlab chaos` on :8081, and prints
# where to look. Ctrl-C stops it.
#   ./scripts/lab.sh [--mode legacy] [--cpus 4] [--mm-replicas 2] [--frames 256] [--hca 1]
#                    [--kvm 1] [--mmu-lock spin|sleep|generation]
#                    [--invalidate-latency uniform:1:5] [--api-port 8081] [--free-ports]
#                    [--byo gpu0]   (an external device you run: its credentials file is printed)
set -euo pipefail
cd "$(dirname "$0")/.."
cli=dist/apps/lab/src/main.js
# options first, with the CLI already built (if any): a typo costs one line, not a build
if [ -f "$cli" ] && command -v node >/dev/null 2>&1; then
  node "$cli" up --check "$@" >/dev/null
fi
./scripts/ensure-deps.sh --for lab
./scripts/build-if-stale.sh
exec node "$cli" up "$@"
