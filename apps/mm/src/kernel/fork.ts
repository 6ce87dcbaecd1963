/**
 * kernel/fork.c + mm/memory.c: dup_mm() → dup_mmap() → copy_page_range().
 * Models: dup_mmap() and copy_page_range(), v3.7 (patched) and v3.6 (legacy): both wrap the
 * write-protection of a COW mapping in invalidate_range_start/_end on the parent.
 */
import { MmlabError, PAGE_SIZE } from '@mmlab/protocol';
import { type Vma, pteFrameRef, pteLockOfVpn } from '@mmlab/model';
import type { MmContext, OpIntent } from './context';
import { crashPoint } from './crash_point';
import { intentBegin, intentEnd } from './intent';
import { mmapWriteLock, mmapWriteUnlock } from './locks';
import { invalidateRangeEnd, invalidateRangeStart, withinRange } from './mmu_notifier';
import type { Frame } from './page_alloc';
import { forEachPteTable, staleLease } from './pagewalk';
import { flushTlbRange } from './tlbflush';
import { copyHugePmdRange } from './huge_memory';
import { copyHugetlbPageRange } from './hugetlb';

/**
 * fork(): a child with the parent's VMAs whose PTEs point at the same frames. Private
 * mappings become copy-on-write in both (is_cow_mapping): for each, invalidate_range_start
 * on the parent (PROTECTION_PAGE: secondary MMUs must drop write access too) before the PT
 * lock, write-protect under it, end after, with the same mmun_start/mmun_end. Shared mappings
 * stay shared and writable.
 *
 * A shared mapping maps a file or a shmem object (shmem_zero_setup behind MAP_SHARED|
 * MAP_ANONYMOUS): a page not faulted in yet is found by the child's own fault, in the object's
 * page cache, so nothing needs to be populated first.
 *
 * A fork that dies half way (its replica killed, or a lease lost) is rolled back, never
 * forward: the child exists as 'forking' (ESRCH to everyone) until forkDone, its pid and each
 * chunk of frames it took references on are in the fork's intent record (intent.ts), so
 * forkRollback can drop exactly the references taken and leave a tombstone that refuses a late
 * write of a replica that was only stopped. The parent keeps its write-protected PTEs: a COW
 * on a page mapped once reuses it (reuseSwapPage), so that is invisible.
 *
 *   mm-0 (fork of pid 1)                       mm-1
 *   intent {child 2}; forkChild(2, forking)
 *   copyPteRange → chunk 1 [pfn 5]; get_page(#c1)
 *   SIGKILL
 *                                              lease of mm-0 gone: intentClaim
 *                                              forkUndo(2): tombstone, no PTEs
 *                                              batchUndo(#c1): put pfn 5 (applied)
 *                                              reply EOWNERDEAD (definite: no child)
 */
export async function doFork(ctx: MmContext, pid: number): Promise<number> {
  const op = ctx.ids.next('fork');
  const sem = await mmapWriteLock(ctx, pid, op);
  try {
    const { state, mmapNext } = await ctx.store.mmState(pid);
    if (state !== 'alive') throw new MmlabError('ESRCH', `no process ${pid}`);
    const child = await ctx.store.nextPid();
    const it = await intentBegin(ctx, op, pid, 'fork', { child });
    try {
      await crashPoint(ctx, 'fork.intent');
      const vmas = await ctx.store.vmas(pid);
      if (!(await ctx.store.forkChild(child, vmas, mmapNext, it.id)))
        throw new MmlabError('ESTALE', `fork of pid ${pid}: child ${child} exists already`);
      await crashPoint(ctx, 'fork.child_created');
      for (const v of vmas) await copyPageRange(ctx, op, pid, child, v, it);
      if (!(await ctx.store.forkDone(child, it.id)))
        throw new MmlabError('ESTALE', `fork of pid ${pid} was taken over and rolled back`);
      await crashPoint(ctx, 'fork.child_alive');
      traceForked(ctx, op, pid, child, vmas);
      return child;
    } catch (e) {
      // Failed half way (a lease lost, contention past the deadline): no child.
      const rec = (await ctx.store.intents(pid)).find((x) => x.id === it.id);
      if (rec?.owner === it.owner)
        await forkRollback(ctx, op, child, it.id, rec.chunks).catch(() => undefined);
      throw e;
    } finally {
      await intentEnd(ctx, op);
    }
  } finally {
    await mmapWriteUnlock(ctx, sem);
  }
}

/** A fork that completed, traced: process.fork, then each of the child's VMAs. */
export function traceForked(
  ctx: MmContext,
  op: string,
  pid: number,
  child: number,
  vmas: readonly Vma[],
): void {
  ctx.tracer.emit({ kind: 'process.fork', op, pid, child });
  for (const v of vmas)
    ctx.tracer.emit({
      kind: 'vma.map',
      op,
      pid: child,
      start: v.start * PAGE_SIZE,
      end: v.end * PAGE_SIZE,
      prot: v.prot,
      flags: [
        ...(v.hugetlb ? (['hugetlb'] as const) : []),
        ...(v.shared ? (['shared'] as const) : []),
      ],
    });
}

/**
 * Undo a fork that did not complete (its own failure, or a dead replica's, taken over): the
 * child becomes a tombstone without PTEs, and each chunk's get_page batch is put back if it
 * was applied (and refused from now on if not). → 'ALIVE' when the fork had completed (nothing
 * to undo: the caller may be told the child's pid).
 */
export async function forkRollback(
  ctx: MmContext,
  op: string,
  child: number,
  forker: string,
  chunks: Frame[][],
): Promise<'UNDONE' | 'ALIVE'> {
  const ptes = await ctx.store.pageTable(child);
  if ((await ctx.store.forkUndo(child, forker)) === 'ALIVE') return 'ALIVE';
  for (const [vpn, pte] of [...ptes].filter(([, p]) => !p.swap && !p.file))
    ctx.tracer.emit({
      kind: 'pte.clear',
      op,
      pid: child,
      addr: vpn * PAGE_SIZE,
      pfn: pte.pfn,
      gen: pte.gen,
      lock: pteLockOfVpn(vpn),
      token: null,
    });
  for (let n = 1; n <= chunks.length; n++) {
    const u = await ctx.store.batchUndo(`${forker}#c${n}`, chunks[n - 1]);
    const gens = new Map(chunks[n - 1].map((f) => [f.pfn, f.gen]));
    for (const pfn of u.freed)
      ctx.tracer.emit({ kind: 'frame.free', op, pfn, gen: gens.get(pfn)! });
  }
  return 'UNDONE';
}

/** copy_page_range() for one VMA. */
async function copyPageRange(
  ctx: MmContext,
  op: string,
  src: number,
  dst: number,
  vma: Vma,
  it: OpIntent,
): Promise<void> {
  // is_vm_hugetlb_page(vma): copy_hugetlb_page_range, before (and without) the range start
  if (vma.hugetlb) return copyHugetlbPageRange(ctx, op, src, dst, vma);
  const isCow = !vma.shared;
  const mmunStart = vma.start * PAGE_SIZE; /* For mmu_notifiers */
  const mmunEnd = vma.end * PAGE_SIZE; /* For mmu_notifiers */
  const range = isCow
    ? await invalidateRangeStart(ctx, op, src, mmunStart, mmunEnd, 'protection_page')
    : null;
  try {
    await crashPoint(ctx, 'fork.range_started');
    // copy_pmd_range(): a huge entry is copied whole (copy_huge_pmd)
    if (isCow)
      await withinRange(range, () =>
        copyHugePmdRange(ctx, op, src, dst, vma.start, vma.end, it.id),
      );
    await withinRange(range, () =>
      forEachPteTable(ctx, op, src, vma.start, vma.end, async (held, s, e) => {
        const { lock, lease } = held;
        const r = await ctx.store.copyPteRange(
          src,
          lock,
          lease.value,
          lease.token,
          s,
          e,
          isCow,
          it,
        );
        if (!r) throw staleLease(ctx, held, 'copy_pte_range');
        it.chunks = Math.max(it.chunks, r.chunk);
        await crashPoint(ctx, 'fork.copied');
        // The child's references are taken before the parent's lock is dropped: a write fault
        // in the parent must find the frame shared (mapcount 2) and copy it. One batch per
        // chunk, applied once, so a rollback knows whether to put it back.
        // (a swap entry's slot gets its swap_duplicate in the same batch: pteFrameRef)
        const bad = await ctx.store.getPagesBatch(
          r.child.flatMap((c) => pteFrameRef(c.pte)),
          'map',
          `${it.id}#c${r.chunk}`,
        );
        if (bad === 'UNDONE' || bad === 'DONE')
          throw new MmlabError('ESTALE', `fork of pid ${src} was taken over and rolled back`);
        if (bad.length)
          throw new MmlabError('EINTERNAL', `copy_pte_range found dead frames ${bad.join(', ')}`);
        await crashPoint(ctx, 'fork.referenced');
        if (r.writeProtected)
          await flushTlbRange(ctx, op, src, s * PAGE_SIZE, e * PAGE_SIZE, r.cpumask);
        if (!(await ctx.store.setPtes(dst, it.id, r.child)))
          throw new MmlabError('ESTALE', `fork of pid ${src} was taken over and rolled back`);
        for (const c of r.child.filter((x) => !x.pte.swap && !x.pte.file))
          ctx.tracer.emit({
            kind: 'pte.set',
            op,
            pid: dst,
            addr: c.vpn * PAGE_SIZE,
            ...c.pte,
            lock,
            token: null,
          });
        await crashPoint(ctx, 'fork.child_set');
      }),
    );
  } finally {
    if (range) await invalidateRangeEnd(ctx, range, mmunStart, mmunEnd);
  }
  await crashPoint(ctx, 'fork.range_ended');
}
