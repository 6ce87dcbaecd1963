#!/usr/bin/env bash
# The whole lab, natively (no Docker): installs what is missing, builds, starts nats-server,
# redis-server and every service (hca0.. included), serves the lab API for `mmlab chaos` on
# :8081, and prints where to look. Ctrl-C stops it.
#   ./scripts/lab.sh [--mode legacy] [--cpus 4] [--mm-replicas 2] [--frames 256] [--hca 1]
#                    [--invalidate-latency uniform:1:5] [--api-port 8081] [--free-ports]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/ensure-deps.sh
npm run --silent build
exec node dist/apps/lab/src/main.js up "$@"
