/**
 * Redis as a digest, key by key, for the fuzz suites' "nothing changed" (test/fuzz-*.e2e-spec.ts):
 * every key's DUMP hashed, less the keys and hash fields that change with no request at all.
 */
import { createHash } from 'node:crypto';
import type { Store } from '@mmlab/model';

/**
 * What the digest leaves out: keys that change with no request at all (timers: the liveness
 * leases of the mm replicas, subscribers and CPUs, renewed every few hundred ms) and the
 * counters an mm replica bumps for any request that takes a lock of a real process, refused
 * or not: its fencing-token counter ({p:N}:fence) and its mm's seq (a field of {p:N}:mm, the
 * rest of which is digested).
 */
export const VOLATILE_KEYS = [/^\{mm\}:live:/, /^\{sub\}:live:/, /^\{p:\d+\}:fence$/];
/** Hashes digested field by field, less their counters: mm's seq; the page cache's ino_next (a
 * refused MAP_SHARED|MAP_ANONYMOUS mmap used an inode number for the shmem object it evicted). */
const COUNTER_FIELDS: Array<[RegExp, Set<string>]> = [
  [/^\{p:\d+\}:mm$/, new Set(['seq'])],
  [/^\{mem\}:pagecache$/, new Set(['ino_next'])],
];
const countersOf = (k: string) => COUNTER_FIELDS.find(([re]) => re.test(k))?.[1];

/** Redis, as a digest of every key's value (DUMP) but the volatile ones, key by key. */
export async function digest(store: Store): Promise<Map<string, string>> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await store.redis.scan(cursor, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch.filter((k) => !VOLATILE_KEYS.some((re) => re.test(k))));
  } while (cursor !== '0');
  const p = store.redis.pipeline();
  for (const k of keys)
    if (countersOf(k)) p.hgetall(k);
    else p.dumpBuffer(k);
  const out = new Map<string, string>();
  for (const [i, [err, v]] of ((await p.exec()) ?? []).entries()) {
    const h = createHash('sha256');
    if (err) h.update(`err:${String(err)}`);
    else if (countersOf(keys[i])) {
      // the hash itself, less its counters (small), so that a change says which fields; a hash
      // of counters only is no state (as if absent)
      const fields = Object.entries(v as Record<string, string>)
        .filter(([f]) => !countersOf(keys[i])!.has(f))
        .sort();
      if (fields.length > 0) out.set(keys[i], JSON.stringify(fields));
      continue;
    } else h.update((v as Buffer | null) ?? Buffer.from('(gone)'));
    out.set(keys[i], h.digest('hex').slice(0, 16));
  }
  return out;
}

/** The keys whose value differs between two digests (added, removed or changed). */
export function changedKeys(a: Map<string, string>, b: Map<string, string>): string[] {
  const keys = new Set([...a.keys(), ...b.keys()]);
  return [...keys]
    .filter((k) => a.get(k) !== b.get(k))
    .sort()
    .map((k) => (countersOf(k) ? `${k} ${a.get(k)} → ${b.get(k)}` : k));
}
