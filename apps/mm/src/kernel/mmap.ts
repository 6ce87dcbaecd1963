/** mm/mmap.c (v3.7): creating address spaces, do_mmap() and do_munmap(); mm/madvise.c's DONTNEED. */
import { MmlabError, PAGE_SIZE, type Prot } from '@mmlab/protocol';
import { type MmContext, backoff, startVpn } from './context';
import { mmapReadLock, mmapReadUnlock, mmapWriteLock, mmapWriteUnlock } from './locks';
import { zapPageRange, zapPteRanges } from './memory';
import { mmuNotifierRelease } from './mmu_notifier';
import { crashPoint } from './crash_point';
import { intentBegin, intentEnd } from './intent';

/** mm_alloc(): a new, empty address space. */
export async function mmCreate(ctx: MmContext): Promise<number> {
  const pid = await ctx.store.mmCreate();
  ctx.tracer.emit({ kind: 'process.create', op: ctx.ids.next('create'), pid });
  return pid;
}

/** do_mmap(MAP_ANONYMOUS | MAP_PRIVATE or MAP_SHARED): one atomic step under mmap_sem. */
export async function doMmap(
  ctx: MmContext,
  pid: number,
  pages: number,
  prot: Prot,
  shared: boolean,
): Promise<number> {
  const op = ctx.ids.next('mmap');
  const deadline = Date.now() + ctx.env.MMLAB_FAULT_DEADLINE_MS;
  for (let attempt = 0; ; attempt++) {
    const r = await ctx.store.mmap(pid, pages, prot, shared);
    switch (r[0]) {
      case 'OK': {
        const start = Number(r[1]) * PAGE_SIZE;
        ctx.tracer.emit({
          kind: 'vma.map',
          op,
          pid,
          start,
          end: start + pages * PAGE_SIZE,
          prot,
          flags: shared ? ['shared'] : [],
        });
        return start;
      }
      case 'ESRCH':
        throw new MmlabError('ESRCH', `no process ${pid}`);
      case 'ENOMEM':
        throw new MmlabError('ENOMEM', `no room for ${pages} pages in pid ${pid}`);
      default:
        await backoff(attempt, deadline, `mmap_sem of pid ${pid}`);
    }
  }
}

/**
 * do_munmap(): under mmap_sem for write, detach the VMAs of the range (later faults there are
 * SIGSEGV), then unmap_region() → zap_page_range() over the whole range. Zapping the whole
 * range, not only what the VMAs covered, makes munmap idempotent: when a replica loses its
 * lease half way (ESTALE, indefinite), retrying the munmap finishes the job, and when it dies
 * half way, another replica runs it again from its intent record (intent.ts).
 */
export async function doMunmap(
  ctx: MmContext,
  pid: number,
  addr: number,
  pages: number,
): Promise<{ zapped: number; freed: number }> {
  const s = startVpn(addr, 'munmap');
  const op = ctx.ids.next('munmap');
  await intentBegin(ctx, op, pid, 'munmap', { addr, pages });
  try {
    await crashPoint(ctx, 'munmap.intent');
    return await munmapSteps(ctx, op, pid, s, pages);
  } finally {
    await intentEnd(ctx, op);
  }
}

/** The steps of do_munmap() for op (which has its intent record: first run, or a take-over). */
export async function munmapSteps(
  ctx: MmContext,
  op: string,
  pid: number,
  s: number,
  pages: number,
): Promise<{ zapped: number; freed: number }> {
  const sem = await mmapWriteLock(ctx, pid, op);
  try {
    const removed = await ctx.store.vmaUnmap(pid, sem.lease.value, s, s + pages);
    if (!removed) throw new MmlabError('ESTALE', `lost mmap_sem of pid ${pid}`);
    for (const [rs, re] of removed)
      ctx.tracer.emit({ kind: 'vma.unmap', op, pid, start: rs * PAGE_SIZE, end: re * PAGE_SIZE });
    await crashPoint(ctx, 'munmap.vma_unmapped');
    const r = await zapPageRange(ctx, op, pid, s, s + pages, 'unmap');
    await crashPoint(ctx, 'munmap.range_ended');
    return r;
  } finally {
    await mmapWriteUnlock(ctx, sem);
  }
}

/**
 * Models: madvise(MADV_DONTNEED) → madvise_dontneed() → zap_page_range(), mm/madvise.c v3.7:
 * the pages go, the VMA stays; the next touch faults in zero. Under mmap_sem for *read*
 * (madvise_need_mmap_write() is false for DONTNEED): faults elsewhere in the mapping go on
 * while a subscriber sleeps in this range's invalidate_range_start.
 *
 *   madvise(page 0) (mm-0)                  CPU store to page 1 (mm-1)
 *   down_read(mmap_sem)
 *   range_start [0, 1) → hca0 (paused)
 *                                           fault: no writer of mmap_sem → page installed
 *                                           store done
 *   ... hca0 resumes, acks ...
 *   zap page 0; range_end; up_read
 */
export async function madviseDontneed(
  ctx: MmContext,
  pid: number,
  addr: number,
  pages: number,
): Promise<{ zapped: number; freed: number }> {
  const s = startVpn(addr, 'madvise');
  const op = ctx.ids.next('madvise');
  // The zap clears PTEs whose frames are put after the shootdown: recorded (intent.ts) so that
  // a replica dying in between leaks nothing — another runs the zap again and puts them.
  await intentBegin(ctx, op, pid, 'madvise', { addr, pages });
  try {
    await crashPoint(ctx, 'madvise.intent');
    return await madviseSteps(ctx, op, pid, s, pages);
  } finally {
    await intentEnd(ctx, op);
  }
}

/** The steps of madvise(DONTNEED) for op (first run, or a take-over: the zap is idempotent). */
export async function madviseSteps(
  ctx: MmContext,
  op: string,
  pid: number,
  s: number,
  pages: number,
): Promise<{ zapped: number; freed: number }> {
  const sem = await mmapReadLock(ctx, pid, op);
  try {
    for (let v = s; v < s + pages;) {
      const vma = await ctx.store.findVma(pid, v);
      if (!vma) throw new MmlabError('ENOMEM', `0x${(v * PAGE_SIZE).toString(16)} is not mapped`);
      v = vma.end;
    }
    ctx.tracer.emit({
      kind: 'madvise',
      op,
      pid,
      start: s * PAGE_SIZE,
      end: (s + pages) * PAGE_SIZE,
      advice: 'dontneed',
    });
    return await zapPageRange(ctx, op, pid, s, s + pages, 'clear');
  } finally {
    await mmapReadUnlock(ctx, sem);
  }
}

/**
 * exit_mmap(): mmu_notifier_release() first — every subscriber drops everything of the mm and
 * is unhashed, and only then are pages freed — then unmap_vmas() (no one left to notify) and
 * the mm is gone.
 */
export async function exitMmap(ctx: MmContext, pid: number): Promise<{ freed: number }> {
  const op = ctx.ids.next('exit');
  const sem = await mmapWriteLock(ctx, pid, op);
  try {
    const { state } = await ctx.store.mmState(pid);
    if (state !== 'alive') throw new MmlabError('ESRCH', `no process ${pid}`);
    await mmuNotifierRelease(ctx, op, pid);
    let freed = 0;
    for (const v of await ctx.store.vmas(pid))
      freed += (await zapPteRanges(ctx, op, pid, v.start, v.end)).freed;
    if (!(await ctx.store.mmExit(pid, sem.lease.value)))
      throw new MmlabError('ESTALE', `lost mmap_sem of pid ${pid}`);
    ctx.tracer.emit({ kind: 'process.exit', op, pid });
    return { freed };
  } finally {
    await mmapWriteUnlock(ctx, sem);
  }
}
