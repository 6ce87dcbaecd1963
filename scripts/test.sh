#!/usr/bin/env bash
# The whole check, as CI runs it: set-up, lint, format, type-check, build, every test.
# Tests start their own nats-server and redis-server on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/ensure-deps.sh --for test

step() { printf '\n== %s\n' "$*"; }
step lint;        npx eslint . --max-warnings 0
step format;      npx prettier --check . --log-level warn
step typecheck;   npm run --silent typecheck   # the repository, and the dashboard (DOM, JSX)
step build;       npm run --silent build
step protocol;    node dist/libs/protocol/src/gen-doc.js --check docs/protocol.md
step redis;       node dist/libs/model/src/gen-doc.js --check docs/redis.md
step tests;       npx vitest run
