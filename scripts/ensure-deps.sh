#!/usr/bin/env bash
# Installs what mmlab needs and is missing. Node 20+ is assumed; the rest comes from Debian
# packages and, for npm packages, from the lockfile. Safe to run again.
#   --for lab   (default) what the lab runs on: nats-server, redis-server, the npm packages
#   --for test  that, and what only the tests use: chromium (the dashboard's browser test
#               drives it through playwright-core) and docker-compose (validates the compose
#               file; no Docker engine needed)
set -euo pipefail
cd "$(dirname "$0")/.."

for_what=lab
while [ $# -gt 0 ]; do
  case "$1" in
    --for)
      for_what="${2:-}"
      shift 2 || true
      ;;
    --for=*)
      for_what="${1#--for=}"
      shift
      ;;
    *)
      echo "ensure-deps.sh: unknown option $1 (use --for lab|test)" >&2
      exit 2
      ;;
  esac
done
case "$for_what" in
  lab | test) ;;
  *)
    echo "ensure-deps.sh: --for must be lab or test, got '${for_what}'" >&2
    exit 2
    ;;
esac

major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$major" -lt 20 ]; then
  echo "mmlab needs Node.js 20 or newer (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

missing=()
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ "$for_what" = test ]; then
  [ -e /usr/bin/chromium ] || missing+=(chromium)
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (Debian packages)"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# npm packages: installed when a package of the lockfile is missing from node_modules or has
# another version there (npm's own record of what it installed, node_modules/.package-lock.json),
# not whenever the lockfile's mtime moves (a change to package.json's scripts or bin needs none)
if ! node -e '
  const fs = require("fs");
  const want = JSON.parse(fs.readFileSync("package-lock.json", "utf8")).packages;
  const have = JSON.parse(fs.readFileSync("node_modules/.package-lock.json", "utf8")).packages;
  const stale = Object.entries(want).filter(
    ([k, v]) => k !== "" && !v.optional && !v.peer && (!have[k] || have[k].version !== v.version));
  process.exit(stale.length === 0 ? 0 : 1);
' 2>/dev/null; then
  echo "installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error
fi
