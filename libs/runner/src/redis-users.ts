/**
 * The Redis users of a lab the runner starts (libs/model acl.ts declares what each may do): a
 * fresh random password per kind at every start (crypto.randomBytes, never written anywhere but
 * the hashed aclfile and the services' environment), and the URL each kind connects with.
 */
import { createHash, randomBytes } from 'node:crypto';
import { REDIS_KINDS, type RedisKind, aclFile } from '@mmlab/model';

export interface RedisUsers {
  /** the aclfile text (passwords as SHA-256): redis-server --aclfile, mode 0600 */
  readonly aclFile: string;
  /** the plain passwords (kind → password), for the URLs */
  readonly passwords: Readonly<Record<RedisKind, string>>;
}

/**
 * New users for every kind (`dev` only when instances names some). instances: each kind's
 * instance names (cpu0, hca0, ...), for the patterns of keys one instance owns (its liveness
 * lease); a kind left out gets `<kind>*`.
 */
export function newRedisUsers(
  instances: Partial<Record<RedisKind, readonly string[]>> = {},
): RedisUsers {
  const passwords = Object.fromEntries(
    REDIS_KINDS.map((k) => [k, randomBytes(24).toString('hex')]),
  ) as Record<RedisKind, string>;
  // the dev user (bring-your-own devices) only in a lab that has some (mmlab up --byo)
  const kinds = REDIS_KINDS.filter((k) => k !== 'dev' || (instances.dev?.length ?? 0) > 0);
  const users = Object.fromEntries(
    kinds.map((k) => [
      k,
      {
        passwordSha256: createHash('sha256').update(passwords[k]).digest('hex'),
        instances: instances[k],
      },
    ]),
  );
  return { aclFile: aclFile(users), passwords };
}

/** redis://host:port (or redis+cluster://h:p,h:p) with user:password put in. */
export const redisUrlWithUser = (url: string, user: string, password: string): string =>
  url.replace(
    /^(redis(?:\+cluster)?:\/\/)(?:[^@/]*@)?/,
    `$1${encodeURIComponent(user)}:${encodeURIComponent(password)}@`,
  );

/** The URL of every kind on the Redis at url. */
export const redisUrlsFor = (url: string, users: RedisUsers): Record<RedisKind, string> =>
  Object.fromEntries(
    REDIS_KINDS.map((k) => [k, redisUrlWithUser(url, k, users.passwords[k])]),
  ) as Record<RedisKind, string>;
