/** mm/mprotect.c: mprotect() → mprotect_fixup() → change_protection(). */
import { MmlabError, PAGE_SIZE, type Prot } from '@mmlab/protocol';
import { type MmContext, startVpn } from './context';
import { refuseHugetlb } from './hugetlb';
import { mmapWriteLock, mmapWriteUnlock } from './locks';
import { forEachPteTable, staleLease } from './pagewalk';
import { invalidateRangeEnd, invalidateRangeStart, withinRange } from './mmu_notifier';
import { splitHugePmdRange } from './huge_memory';
import { flushTlbRange } from './tlbflush';
import { crashPoint } from './crash_point';
import { withIntent } from './intent';

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
  const s = startVpn(addr, 'mprotect', pages);
  await refuseHugetlb(ctx, pid, s, s + pages, 'mprotect');
  const op = ctx.ids.next('mprotect');
  return withIntent(ctx, op, pid, 'mprotect', { addr, pages, prot }, () =>
    mprotectSteps(ctx, op, pid, s, pages, prot),
  );
}

/**
 * The steps of mprotect() for op (which has its intent record). Idempotent: run again from the
 * top by the replica that takes over a dead one's mprotect (intent.ts).
 */
export async function mprotectSteps(
  ctx: MmContext,
  op: string,
  pid: number,
  s: number,
  pages: number,
  prot: Prot,
): Promise<number> {
  const addr = s * PAGE_SIZE;
  const sem = await mmapWriteLock(ctx, pid, op);
  try {
    const e = s + pages;
    // THP: the huge entries of the range become PTEs first (v3.7 change_huge_pmd keeps a whole
    // one huge; mmlab splits every one the range meets: split_huge_page_pmd)
    await splitHugePmdRange(ctx, op, pid, s, e, 'all');
    const r = await ctx.store.vmaProtect(pid, sem.lease.value, s, e, prot);
    if (r === 'ESTALE') throw new MmlabError('ESTALE', `lost mmap_sem of pid ${pid}`);
    if (r === 'ENOMEM')
      throw new MmlabError('ENOMEM', `[0x${addr.toString(16)}, +${pages} pages) is not all mapped`);
    ctx.tracer.emit({ kind: 'vma.protect', op, pid, start: addr, end: e * PAGE_SIZE, prot });
    await crashPoint(ctx, 'mprotect.vma_protected');
    const mmunStart = addr; /* For mmu_notifiers */
    const mmunEnd = e * PAGE_SIZE; /* For mmu_notifiers */
    const range = await invalidateRangeStart(ctx, op, pid, mmunStart, mmunEnd, 'protection_vma');
    let changed = 0;
    try {
      await crashPoint(ctx, 'mprotect.range_started');
      await withinRange(range, () =>
        forEachPteTable(ctx, op, pid, s, e, async (held, ps, pe) => {
          const { lock, lease } = held;
          const c = await ctx.store.changePteRange(
            pid,
            lock,
            lease.value,
            lease.token,
            ps,
            pe,
            prot,
          );
          if (!c) throw staleLease(ctx, held, 'change_pte_range');
          changed += c.changed;
          await crashPoint(ctx, 'mprotect.changed');
          if (c.downgraded)
            await flushTlbRange(ctx, op, pid, ps * PAGE_SIZE, pe * PAGE_SIZE, c.cpumask);
        }),
      );
    } finally {
      await invalidateRangeEnd(ctx, range, mmunStart, mmunEnd);
    }
    await crashPoint(ctx, 'mprotect.range_ended');
    return changed;
  } finally {
    await mmapWriteUnlock(ctx, sem);
  }
}
