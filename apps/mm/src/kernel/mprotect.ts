/** mm/mprotect.c: mprotect() → mprotect_fixup() → change_protection(). */
import { MmlabError, PAGE_SIZE, PTRS_PER_PTE, type Prot, isPageAligned } from '@mmlab/protocol';
import type { MmContext } from './context';
import { mmapWriteLock, mmapWriteUnlock, ptlLock, ptlUnlock } from './locks';
import { invalidateRangeEnd, invalidateRangeStart } from './mmu_notifier';
import { flushTlbRange } from './tlbflush';

/**
 * Under mmap_sem for write: set the VMAs' protection, then change_protection() over the range:
 * invalidate_range_start (PROTECTION_VMA) outside every lock; per page-table page, under its
 * PT lock, downgrade the PTEs and shoot down the CPU TLBs; then invalidate_range_end with the
 * same mmun_start/mmun_end.
 */
export async function doMprotect(
  ctx: MmContext,
  pid: number,
  addr: number,
  pages: number,
  prot: Prot,
): Promise<number> {
  if (!isPageAligned(addr))
    throw new MmlabError('EINVAL', `mprotect address 0x${addr.toString(16)} is not page aligned`);
  const op = ctx.ids.next('mprotect');
  const sem = await mmapWriteLock(ctx, pid, op);
  try {
    const s = addr / PAGE_SIZE;
    const e = s + pages;
    const r = await ctx.store.vmaProtect(pid, sem.lease.value, s, e, prot);
    if (r === 'ESTALE') throw new MmlabError('ESTALE', `lost mmap_sem of pid ${pid}`);
    if (r === 'ENOMEM')
      throw new MmlabError('ENOMEM', `[0x${addr.toString(16)}, +${pages} pages) is not all mapped`);
    ctx.tracer.emit({ kind: 'vma.protect', op, pid, start: addr, end: e * PAGE_SIZE, prot });
    const mmunStart = addr; /* For mmu_notifiers */
    const mmunEnd = e * PAGE_SIZE; /* For mmu_notifiers */
    const range = await invalidateRangeStart(ctx, op, pid, mmunStart, mmunEnd, 'protection_vma');
    let changed = 0;
    try {
      for (const pmd of await ctx.store.pmds(pid)) {
        const ps = Math.max(s, pmd * PTRS_PER_PTE);
        const pe = Math.min(e, (pmd + 1) * PTRS_PER_PTE);
        if (ps >= pe) continue;
        const held = await ptlLock(ctx, pid, `ptl:${pmd}`, op);
        try {
          const c = await ctx.store.changePteRange(
            pid,
            held.lock,
            held.lease.value,
            held.lease.token,
            ps,
            pe,
            prot,
          );
          if (!c) {
            ctx.tracer.emit({
              kind: 'pte.reject',
              op,
              pid,
              lock: held.lock,
              token: held.lease.token,
              reason: 'stale fencing token',
            });
            throw new MmlabError('ESTALE', `lost ${held.lock} of pid ${pid} in change_pte_range`);
          }
          changed += c.changed;
          if (c.downgraded)
            await flushTlbRange(ctx, op, pid, ps * PAGE_SIZE, pe * PAGE_SIZE, c.cpumask);
        } finally {
          await ptlUnlock(ctx, held);
        }
      }
    } finally {
      await invalidateRangeEnd(ctx, range, mmunStart, mmunEnd);
    }
    return changed;
  } finally {
    await mmapWriteUnlock(ctx, sem);
  }
}
