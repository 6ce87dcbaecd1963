#!/usr/bin/env bash
# The whole check, as CI runs it: set-up, lint, format, type-check, build, every test.
# Tests start their own nats-server and redis-server on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/ensure-deps.sh --for test

step() { printf '\n== %s\n' "$*"; }
# lint, format and type-check read the sources only: at once (two cores), each one's output
# printed whole after it ended, and any of them failing fails the check
step 'lint, format, typecheck (at once)'
out=$(mktemp -d)
npx eslint . --max-warnings 0 >"$out/lint" 2>&1 & lint=$!
npx prettier --check . --log-level warn >"$out/format" 2>&1 & format=$!
npm run --silent typecheck >"$out/typecheck" 2>&1 & typecheck=$! # the repository, and the dashboard (DOM, JSX)
failed=''
for s in lint format typecheck; do
  if wait "${!s}"; then step "$s: ok"; else step "$s: FAILED"; failed="$failed $s"; fi
  cat "$out/$s"
done
rm -rf "$out"
if [ -n "$failed" ]; then echo "failed:$failed" >&2; exit 1; fi
# build through build-if-stale.sh (a clean clone: always), so that the stamp it leaves tells
# scripts/lab.sh, which test/byo-conform.e2e-spec.ts runs as a user would, that dist/ is current
step build;       ./scripts/build-if-stale.sh
step protocol;    node dist/libs/protocol/src/gen-doc.js --check docs/protocol.md
step redis;       node dist/libs/model/src/gen-doc.js --check docs/redis.md
step subscriber;  node dist/libs/subscriber/src/gen-doc.js --check docs/subscriber-protocol.md
step nats-users;  node dist/libs/protocol/src/gen-nats-conf.js --check deploy/nats/nats.conf deploy/k8s/base/nats.yaml
step tests
# The unit files (pure code) share each worker's module cache (--no-isolate: 21 against 52
# CPU-s, most of an isolated unit file's time is importing zod, Nest and the libs again), in
# one worker beside the integration files; their output is printed after. vitest.config.ts's
# unit-isolated project (files that vi.mock a module) runs isolated with the integration files.
# `npx vitest run` alone runs all of them, each file isolated.
out=$(mktemp -d)
npx vitest run --project unit --no-isolate --maxWorkers 1 >"$out/unit" 2>&1 & unit=$!
failed=''
npx vitest run --project unit-isolated --project integration --project integration-serial ||
  failed="$failed integration"
wait "$unit" || failed="$failed unit"
step 'unit (shared module cache)'
cat "$out/unit"
rm -rf "$out"
if [ -n "$failed" ]; then echo "failed:$failed" >&2; exit 1; fi
