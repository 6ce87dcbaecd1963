#!/usr/bin/env bash
# The Redis passwords of the compose and k8s labs, one per ACL user (libs/model/src/acl.ts):
# random, made here, never committed. Adds each REDIS_<KIND>_PASSWORD missing from .env (what
# docker compose reads; other lines are kept) and writes the same values to
# deploy/k8s/base/redis-users.env (the Secret mmlab-redis-users of the k8s base). Both files
# are in .gitignore, mode 0600. Run it once before `docker compose up` or `kubectl apply -k`;
# run it again after deleting a line to change that password (then restart Redis and the
# services). The native lab (scripts/lab.sh, mmlab run) makes its own at every start.
#   ./scripts/redis-secrets.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# REDIS_KINDS of libs/model/src/acl.ts (test/compose.e2e-spec.ts checks the two agree)
kinds=(mm cpu hca kvm fsck lab)
umask 077
touch .env
for k in "${kinds[@]}"; do
  var="REDIS_${k^^}_PASSWORD"
  if ! grep -q "^${var}=." .env; then
    pw=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    sed -i "/^${var}=/d" .env
    echo "${var}=${pw}" >>.env
    echo "redis-secrets: ${var} written to .env"
  fi
done
grep '^REDIS_[A-Z]*_PASSWORD=' .env >deploy/k8s/base/redis-users.env
chmod 600 .env deploy/k8s/base/redis-users.env
