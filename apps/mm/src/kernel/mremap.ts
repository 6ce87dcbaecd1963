/** mm/mremap.c: mremap(MREMAP_MAYMOVE) → move_vma() → move_page_tables(). */
import { MmlabError, PAGE_SIZE } from '@mmlab/protocol';
import { type MmContext, startVpn } from './context';
import { refuseHugetlb } from './hugetlb';
import { mmapWriteLock, mmapWriteUnlock } from './locks';
import { forEachPteTable, staleLease } from './pagewalk';
import { zapPageRange } from './memory';
import { invalidateRangeEnd, invalidateRangeStart, withinRange } from './mmu_notifier';
import { splitHugePmdRange } from './huge_memory';
import { flushTlbRange } from './tlbflush';
import { crashPoint } from './crash_point';
import { withIntent } from './intent';

/**
 * Under mmap_sem for write: a shrink first unmaps the tail (do_munmap); then the VMA moves to a
 * fresh address and move_page_tables() carries the PTEs over, wrapped in one
 * invalidate_range_start/end over the old range whose mmun_start/mmun_end stay constant (the
 * patch fixed the end here, which had been recomputed from the moved-to cursor).
 * Returns the new address.
 */
export async function doMremap(
  ctx: MmContext,
  pid: number,
  addr: number,
  pages: number,
  newPages: number,
): Promise<{ addr: number; moved: number }> {
  const s = startVpn(addr, 'mremap', pages);
  await refuseHugetlb(ctx, pid, s, s + pages, 'mremap');
  const op = ctx.ids.next('mremap');
  return withIntent(ctx, op, pid, 'mremap', { addr, pages, newPages }, () =>
    mremapSteps(ctx, op, pid, s, pages, newPages, undefined),
  );
}

/**
 * The steps of mremap() for op (which has its intent record). movedTo: where move_vma already
 * put the VMA (the intent record says, when a replica took over a dead one's mremap past that
 * step): then only the PTEs still at the old place move. Otherwise everything runs again from
 * the top, which the tail zap and move_vma allow.
 */
export async function mremapSteps(
  ctx: MmContext,
  op: string,
  pid: number,
  s: number,
  pages: number,
  newPages: number,
  movedTo: number | undefined,
): Promise<{ addr: number; moved: number }> {
  const addr = s * PAGE_SIZE;
  const sem = await mmapWriteLock(ctx, pid, op);
  try {
    const keep = Math.min(pages, newPages);
    let n = movedTo;
    if (n === undefined) {
      // THP: the huge entries of the range become PTEs first (v3.7 move_huge_pmd moves a whole
      // aligned one; mmlab splits every one the range meets: split_huge_page_pmd)
      await splitHugePmdRange(ctx, op, pid, s, s + pages, 'all');
      const vma = await ctx.store.findVma(pid, s);
      if (!vma || s + pages > vma.end)
        throw new MmlabError(
          'EFAULT',
          `[0x${addr.toString(16)}, +${pages} pages) is not one mapping`,
        );
      if (keep < pages) await zapPageRange(ctx, op, pid, s + keep, s + pages, 'unmap');
      const m = await ctx.store.vmaMove(
        pid,
        sem.lease.value,
        s,
        pages,
        newPages,
        ctx.intents.get(op),
      );
      if (m.r !== 'OK')
        throw new MmlabError(m.r, `move_vma of pid ${pid} at 0x${addr.toString(16)}`);
      n = m.n;
      await crashPoint(ctx, 'mremap.vma_moved');
    }
    const delta = n - s;
    const mmunStart = addr; /* For mmu_notifiers */
    const mmunEnd = (s + keep) * PAGE_SIZE; /* For mmu_notifiers */
    const range = await invalidateRangeStart(ctx, op, pid, mmunStart, mmunEnd, 'unmap');
    let moved = 0;
    try {
      await crashPoint(ctx, 'mremap.move_started');
      // The old page tables' locks; the new range is not reachable by anyone while we hold
      // mmap_sem for write (faults there wait for it), so its tables need no lock here.
      await withinRange(range, () =>
        forEachPteTable(ctx, op, pid, s, s + keep, async (held, ps, pe) => {
          const { lock, lease } = held;
          const r = await ctx.store.movePtes(pid, lock, lease.value, lease.token, ps, pe, delta);
          // The mm began exiting (exit_mmap takes no mmap_sem): no PTE moves into a table its
          // zap may have passed; what stays at the old place, the exit zaps.
          if (r === 'ESRCH') throw new MmlabError('ESRCH', `pid ${pid} is exiting`);
          if (!r) throw staleLease(ctx, held, 'move_ptes');
          moved += r.moved;
          await crashPoint(ctx, 'mremap.moved');
          if (r.moved) await flushTlbRange(ctx, op, pid, ps * PAGE_SIZE, pe * PAGE_SIZE, r.cpumask);
        }),
      );
    } finally {
      await invalidateRangeEnd(ctx, range, mmunStart, mmunEnd);
    }
    await crashPoint(ctx, 'mremap.range_ended');
    ctx.tracer.emit({
      kind: 'vma.move',
      op,
      pid,
      from: addr,
      to: n * PAGE_SIZE,
      pages,
      newPages,
    });
    return { addr: n * PAGE_SIZE, moved };
  } finally {
    await mmapWriteUnlock(ctx, sem);
  }
}
