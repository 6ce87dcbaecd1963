/**
 * The shape zap_pte_range(), change_pte_range(), move_ptes() and copy_pte_range() share: for
 * each page-table page of [startVpn, endVpn) that exists (free_pgd_range skips the empty ones),
 * take its PT lock (pte_offset_map_lock), do one fenced step on the part of the range it
 * covers, and unlock on every path.
 */
import { MmlabError, PTRS_PER_PTE } from '@mmlab/protocol';
import { pteLockName } from '@mmlab/model';
import type { MmContext } from './context';
import { type HeldLock, ptlLock, ptlUnlock, underPtl } from './locks';

export async function forEachPteTable<T>(
  ctx: MmContext,
  op: string,
  pid: number,
  startVpn: number,
  endVpn: number,
  step: (held: HeldLock, s: number, e: number) => Promise<T>,
): Promise<T[]> {
  const out: T[] = [];
  for (const pmd of await ctx.store.pmds(pid)) {
    const s = Math.max(startVpn, pmd * PTRS_PER_PTE);
    const e = Math.min(endVpn, (pmd + 1) * PTRS_PER_PTE);
    if (s >= e) continue;
    const held = await ptlLock(ctx, pid, pteLockName(pmd), op);
    try {
      out.push(await underPtl(held, () => step(held, s, e)));
    } finally {
      await ptlUnlock(ctx, held);
    }
  }
  return out;
}

/** A fenced page-table script refused the write: the lease was lost. Trace it; fail with ESTALE. */
export function staleLease(ctx: MmContext, held: HeldLock, where: string): MmlabError {
  ctx.tracer.emit({
    kind: 'pte.reject',
    op: held.op,
    pid: held.pid,
    lock: held.lock,
    token: held.lease.token,
    reason: 'stale fencing token',
  });
  return new MmlabError('ESTALE', `lost ${held.lock} of pid ${held.pid} in ${where}`);
}
