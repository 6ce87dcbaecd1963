#!/bin/sh
# redis-server with the lab's ACL users (compose and k8s): users.acl, next to this script, is
# generated from libs/model/src/acl.ts (npm run redis:acl) and names each user's password as
# #${REDIS_<KIND>_PASSWORD}; this puts in the SHA-256 of that environment variable (a .env from
# scripts/secrets.sh, or the k8s Secret mmlab-redis-users) and starts redis-server with the
# result (mode 0600, outside any volume). An unset or empty password stops the start: there is
# no default. Arguments go to redis-server.
set -eu
umask 077
acl=/tmp/mmlab-users.acl
: >"$acl"
while IFS= read -r line || [ -n "$line" ]; do
  case "$line" in '' | '#'*) continue ;; esac
  var=$(printf '%s\n' "$line" | sed -n 's/.*#\${\([A-Z_]*\)}.*/\1/p')
  if [ -n "$var" ]; then
    eval "pw=\${$var:-}"
    if [ -z "$pw" ]; then
      echo "mmlab redis: $var is not set (scripts/secrets.sh writes one)" >&2
      exit 1
    fi
    sha=$(printf '%s' "$pw" | sha256sum | cut -d' ' -f1)
    line=$(printf '%s\n' "$line" | sed "s/#\${$var}/#$sha/")
  fi
  printf '%s\n' "$line" >>"$acl"
done <"$(dirname "$0")/users.acl"
# In the redis image, through its entrypoint: it drops root for the redis user (which must then
# be able to read the file) and owns /data for it.
if command -v docker-entrypoint.sh >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then chown redis "$acl"; fi
  exec docker-entrypoint.sh redis-server "$@" --aclfile "$acl"
fi
exec redis-server "$@" --aclfile "$acl"
