/** kernel/fork.c + mm/memory.c: dup_mm() → dup_mmap() → copy_page_range(). */
import { MmlabError, PAGE_SIZE } from '@mmlab/protocol';
import type { Vma } from '@mmlab/model';
import type { MmContext } from './context';
import { mmapWriteLock, mmapWriteUnlock } from './locks';
import { handleMmFault } from './memory';
import { invalidateRangeEnd, invalidateRangeStart, withinRange } from './mmu_notifier';
import { forEachPteTable, staleLease } from './pagewalk';
import { flushTlbRange } from './tlbflush';

/**
 * fork(): a child with the parent's VMAs whose PTEs point at the same frames. Private
 * mappings become copy-on-write in both (is_cow_mapping): for each, invalidate_range_start
 * on the parent (PROTECTION_PAGE: secondary MMUs must drop write access too) before the PT
 * lock, write-protect under it, end after, with the same mmun_start/mmun_end. Shared mappings
 * stay shared and writable.
 *
 * mmlab has no shmem object behind MAP_SHARED|MAP_ANONYMOUS: a shared mapping's pages are
 * populated before the fork so that parent and child share every one of them.
 */
export async function doFork(ctx: MmContext, pid: number): Promise<number> {
  const op = ctx.ids.next('fork');
  for (const v of await ctx.store.vmas(pid))
    if (v.shared && v.prot !== 'none')
      for (let vpn = v.start; vpn < v.end; vpn++)
        await handleMmFault(ctx, pid, vpn * PAGE_SIZE, 'read', 'mm');
  const sem = await mmapWriteLock(ctx, pid, op);
  try {
    const { state, mmapNext } = await ctx.store.mmState(pid);
    if (state !== 'alive') throw new MmlabError('ESRCH', `no process ${pid}`);
    const vmas = await ctx.store.vmas(pid);
    const child = await ctx.store.forkChild(vmas, mmapNext);
    for (const v of vmas) await copyPageRange(ctx, op, pid, child, v);
    ctx.tracer.emit({ kind: 'process.fork', op, pid, child });
    for (const v of vmas)
      ctx.tracer.emit({
        kind: 'vma.map',
        op,
        pid: child,
        start: v.start * PAGE_SIZE,
        end: v.end * PAGE_SIZE,
        prot: v.prot,
        flags: v.shared ? ['shared'] : [],
      });
    return child;
  } finally {
    await mmapWriteUnlock(ctx, sem);
  }
}

/** copy_page_range() for one VMA. */
async function copyPageRange(
  ctx: MmContext,
  op: string,
  src: number,
  dst: number,
  vma: Vma,
): Promise<void> {
  const isCow = !vma.shared;
  const mmunStart = vma.start * PAGE_SIZE; /* For mmu_notifiers */
  const mmunEnd = vma.end * PAGE_SIZE; /* For mmu_notifiers */
  const range = isCow
    ? await invalidateRangeStart(ctx, op, src, mmunStart, mmunEnd, 'protection_page')
    : null;
  try {
    await withinRange(range, () =>
      forEachPteTable(ctx, op, src, vma.start, vma.end, async (held, s, e) => {
        const { lock, lease } = held;
        const r = await ctx.store.copyPteRange(src, lock, lease.value, lease.token, s, e, isCow);
        if (!r) throw staleLease(ctx, held, 'copy_pte_range');
        // The child's references are taken before the parent's lock is dropped: a write fault
        // in the parent must find the frame shared (refcount 2) and copy it.
        const bad = await ctx.store.getPages(
          r.child.map((c) => c.pte),
          'map',
        );
        if (bad.length)
          throw new MmlabError('EINTERNAL', `copy_pte_range found dead frames ${bad.join(', ')}`);
        if (r.writeProtected)
          await flushTlbRange(ctx, op, src, s * PAGE_SIZE, e * PAGE_SIZE, r.cpumask);
        await ctx.store.setPtes(dst, r.child);
        for (const c of r.child)
          ctx.tracer.emit({
            kind: 'pte.set',
            op,
            pid: dst,
            addr: c.vpn * PAGE_SIZE,
            ...c.pte,
            lock,
            token: null,
          });
      }),
    );
  } finally {
    if (range) await invalidateRangeEnd(ctx, range, mmunStart, mmunEnd);
  }
}
