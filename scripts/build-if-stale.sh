#!/usr/bin/env bash
# Builds dist/ (npm run build) only when something it is built from changed since the last
# build this script made: make's rule, with a stamp file. The stamp is taken before the build
# starts and moved into place only after it succeeded, so an edit made during a build, or a
# failed build, means the next call builds again. --quiet: say nothing when up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=dist/.build-stamp
# what dist/ is built from: the sources and every config file the build reads
sources=(apps libs bench examples/byo scripts/bundle.mjs package.json package-lock.json tsconfig.json tsconfig.build.json)
stale=yes
if [ -f "$stamp" ] && [ -f dist/apps/lab/src/main.js ]; then
  newer=$(find "${sources[@]}" -newer "$stamp" -type f ! -name '*.spec.ts' -print -quit 2>/dev/null || true)
  [ -n "$newer" ] || stale=no
fi
if [ "$stale" = no ]; then
  [ "${1:-}" = --quiet ] || echo "dist/ is up to date"
  exit 0
fi
echo "building (sources changed since the last build)"
mkdir -p dist
next=$(mktemp dist/.build-stamp.XXXXXX)
if npm run --silent build; then
  mv -f "$next" "$stamp"
else
  rm -f "$next"
  exit 1
fi
