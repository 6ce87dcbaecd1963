/** Running fsck on a lab's Redis: once, or until the state settles (recovery still running). */
import { Store } from '@mmlab/model';
import { type Finding, fsck } from './checks';
import { readSnapshot } from './snapshot';

export interface FsckReport {
  /** no finding */
  ok: boolean;
  findings: Finding[];
  /** what was looked at */
  frames: number;
  processes: number;
}

export interface FsckOptions {
  /**
   * Read again, every 100 ms, until a snapshot has no finding or this long has passed: what a
   * dead replica left is finished by the others within about two lease TTLs (0: read once).
   */
  settleMs?: number;
}

/** fsck of the state behind store. Throws when Redis cannot be read. */
export async function fsckStore(store: Store, opts: FsckOptions = {}): Promise<FsckReport> {
  const deadline = Date.now() + (opts.settleMs ?? 0);
  for (;;) {
    const s = await readSnapshot(store);
    const findings = fsck(s);
    if (findings.length === 0 || Date.now() >= deadline)
      return {
        ok: findings.length === 0,
        findings,
        frames: s.frames,
        processes: s.processes.length,
      };
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** redis://user:password@host → redis://user@host. */
const withoutPassword = (url: string): string => url.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1@');

/**
 * fsck of the Redis at url (a `redis+cluster://` URL for a cluster). A Redis that does not
 * answer within about connectMs is an error, not a wait.
 */
export async function fsckRedis(
  url: string,
  opts: FsckOptions & { connectMs?: number } = {},
): Promise<FsckReport> {
  const connectMs = opts.connectMs ?? 2000;
  const store = new Store(url, {
    maxRetriesPerRequest: 1,
    connectTimeout: connectMs,
    retryStrategy: (times) => (times > 3 ? null : Math.min(100 * times, connectMs / 3)),
  });
  let failed: Error | undefined;
  store.redis.on('error', (e: Error) => (failed ??= e));
  try {
    return await Promise.race([
      fsckStore(store, opts),
      new Promise<never>((_, reject) =>
        setTimeout(
          // the URL without its user's password (an error lands in results.json)
          () => reject(failed ?? new Error(`no answer from Redis at ${withoutPassword(url)}`)),
          connectMs + (opts.settleMs ?? 0) + 5000,
        ).unref(),
      ),
    ]);
  } finally {
    store.redis.disconnect();
  }
}
