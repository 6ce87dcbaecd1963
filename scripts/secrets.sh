#!/usr/bin/env bash
# The compose and k8s labs' passwords, one per Redis ACL user (libs/model/src/acl.ts) and one per
# NATS user (libs/protocol/src/permissions.ts, DEPLOYED_IDENTITIES): random, made here, never
# committed. Adds each REDIS_<KIND>_PASSWORD and NATS_<USER>_PASSWORD missing from .env (what
# docker compose reads; other lines are kept) and writes the same values to
# deploy/k8s/base/redis-users.env and deploy/k8s/base/nats-users.env (the Secrets
# mmlab-redis-users and mmlab-nats-users of the k8s base). All three files are in .gitignore,
# mode 0600. Run it once before `docker compose up` or `kubectl apply -k`; run it again after
# deleting a line to change that password (then restart Redis or NATS and the services). The
# native lab (scripts/lab.sh, mmlab run) makes its own at every start (docs/security.md).
#   ./scripts/secrets.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# DEPLOYED_REDIS_KINDS of libs/model/src/acl.ts (test/compose.e2e-spec.ts checks the two agree)
kinds=(mm cpu hca kvm fsck lab)
# the users of DEPLOYED_IDENTITIES, libs/protocol/src/permissions.ts (the same test checks them)
nats_users=(mm cpu hca kvm observer lab-api lab)
umask 077
touch .env
add() {
  local var=$1
  if ! grep -q "^${var}=." .env; then
    pw=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    sed -i "/^${var}=/d" .env
    echo "${var}=${pw}" >>.env
    echo "secrets: ${var} written to .env"
  fi
}
for k in "${kinds[@]}"; do add "REDIS_${k^^}_PASSWORD"; done
for u in "${nats_users[@]}"; do u=${u//-/_}; add "NATS_${u^^}_PASSWORD"; done
grep '^REDIS_[A-Z]*_PASSWORD=' .env >deploy/k8s/base/redis-users.env
grep '^NATS_[A-Z_]*_PASSWORD=' .env >deploy/k8s/base/nats-users.env
chmod 600 .env deploy/k8s/base/redis-users.env deploy/k8s/base/nats-users.env
