/**
 * The PT-lock and mmap_sem leases a run leaves held (there must be none once every lease TTL
 * has passed): the runner waits for them, results.json lists them.
 */
import { type RpcClient, sleep } from '@mmlab/runtime';

export interface LockLeft {
  lock: string;
  pid: number;
  owner: string;
}

/**
 * The PT-lock and mmap_sem leases still held, polled until there are none or `ms` passed (a
 * lease whose holder was killed lasts until its TTL). A lab that cannot say is an error.
 */
export async function waitForLocks(
  rpc: RpcClient,
  ms: number,
  signal?: AbortSignal,
): Promise<LockLeft[]> {
  const deadline = Date.now() + ms;
  for (;;) {
    const { locks } = await rpc.call('meminfo', {}, { timeoutMs: 5000 });
    const left = locks.map((l) => ({ lock: l.lock, pid: l.pid, owner: l.owner }));
    if (left.length === 0 || Date.now() >= deadline || signal?.aborted) return left;
    await sleep(100);
  }
}
