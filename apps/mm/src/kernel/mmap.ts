/** mm/mmap.c (v3.7): creating address spaces, do_mmap() and do_munmap(); mm/madvise.c's DONTNEED. */
import { MmlabError, PAGE_SIZE, type Prot, TASK_SIZE } from '@mmlab/protocol';
import type { Vma } from '@mmlab/model';
import { type MmContext, backoff, startVpn } from './context';
import { mmapReadLock, mmapReadUnlock, mmapWriteLock, mmapWriteUnlock } from './locks';
import { zapPageRange, zapPteRanges } from './memory';
import { mmuNotifierRelease } from './mmu_notifier';
import { crashPoint } from './crash_point';
import { withIntent } from './intent';
import { refuseHugetlb } from './hugetlb';

/** mm_alloc(): a new, empty address space. */
export async function mmCreate(ctx: MmContext): Promise<number> {
  const pid = await ctx.store.mmCreate();
  ctx.tracer.emit({ kind: 'process.create', op: ctx.ids.next('create'), pid });
  return pid;
}

/**
 * Models: do_mmap_pgoff(), mm/mmap.c v3.7 — MAP_PRIVATE or MAP_SHARED, of anonymous memory or of
 * a file from its page pgoff (vm_file, vm_pgoff): one atomic step under mmap_sem. A mapping may
 * reach past the end of its file (its pages there fault SIGBUS), as in the kernel.
 */
export async function doMmap(
  ctx: MmContext,
  pid: number,
  pages: number,
  prot: Prot,
  shared: boolean,
  file: { ino: number; pgoff: number } | null = null,
): Promise<number> {
  const op = ctx.ids.next('mmap');
  const deadline = Date.now() + ctx.env.MMLAB_FAULT_DEADLINE_MS;
  if (file && !(await ctx.store.fileInfo(file.ino)))
    throw new MmlabError('ENOENT', `mmap: no file ${file.ino}`);
  // shmem_zero_setup(), mm/shmem.c v3.7: MAP_SHARED|MAP_ANONYMOUS maps a shmem object of its
  // size (no backing store: its pages go to swap), so that the pages a child inherits need not
  // exist before the fork. It goes with its last mapping (shmemRelease).
  const shmem = shared && !file;
  const backing = shmem ? { ino: await ctx.store.fileCreate(pages, false, true), pgoff: 0 } : file;
  for (let attempt = 0; ; attempt++) {
    const r = await ctx.store.mmap(pid, pages, prot, shared, backing);
    switch (r.r) {
      case 'OK': {
        const start = r.start * PAGE_SIZE;
        ctx.tracer.emit({
          kind: 'vma.map',
          op,
          pid,
          start,
          end: start + pages * PAGE_SIZE,
          prot,
          flags: shared ? ['shared'] : [],
          ...(file && { file: file.ino, pgoff: file.pgoff }),
        });
        return start;
      }
      case 'ESRCH':
      case 'ENOMEM':
        if (shmem) await ctx.store.shmemEvict(backing!.ino);
        if (r.r === 'ESRCH') throw new MmlabError('ESRCH', `no process ${pid}`);
        throw new MmlabError('ENOMEM', `no room for ${pages} pages in pid ${pid}`);
      case 'BUSY':
        await backoff(attempt, deadline, `mmap_sem of pid ${pid}`);
    }
  }
}

/**
 * The shmem objects among inos that no VMA of any address space maps any more are evicted
 * (shmem_evict_inode, mm/shmem.c v3.7, at the last fput of its vm_file): their pages go back.
 * Called after an operation removed VMAs (munmap, exit) with the inos they mapped. mmlab keeps
 * no reference count on a file; the scan of every address space's VMAs stands for it. No new
 * reference can appear meanwhile: a shmem object has no name, so only fork copies a mapping of
 * it, from a VMA the scan sees.
 */
export async function shmemRelease(ctx: MmContext, op: string, inos: number[]): Promise<void> {
  if (inos.length === 0) return;
  const left = new Set(inos);
  for (const pid of await ctx.store.processes()) {
    for (const v of await ctx.store.vmas(pid)) if (v.file) left.delete(v.file.ino);
    if (left.size === 0) return;
  }
  for (const ino of left) {
    const info = await ctx.store.fileInfo(ino);
    if (!info?.shmem) continue;
    for (const f of await ctx.store.shmemEvict(ino))
      ctx.tracer.emit({ kind: 'frame.free', op, pfn: f.pfn, gen: f.gen });
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
  const s = startVpn(addr, 'munmap', pages);
  await refuseHugetlb(ctx, pid, s, s + pages, 'munmap');
  const op = ctx.ids.next('munmap');
  return withIntent(ctx, op, pid, 'munmap', { addr, pages }, () =>
    munmapSteps(ctx, op, pid, s, pages),
  );
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
  let r: { zapped: number; freed: number };
  let shmem: number[];
  try {
    shmem = sharedInos(await ctx.store.vmas(pid), s, s + pages);
    const removed = await ctx.store.vmaUnmap(pid, sem.lease.value, s, s + pages);
    if (!removed) throw new MmlabError('ESTALE', `lost mmap_sem of pid ${pid}`);
    for (const [rs, re] of removed)
      ctx.tracer.emit({ kind: 'vma.unmap', op, pid, start: rs * PAGE_SIZE, end: re * PAGE_SIZE });
    await crashPoint(ctx, 'munmap.vma_unmapped');
    r = await zapPageRange(ctx, op, pid, s, s + pages, 'unmap');
    await crashPoint(ctx, 'munmap.range_ended');
  } finally {
    await mmapWriteUnlock(ctx, sem);
  }
  // remove_vma() → fput(vm_file): a shmem object whose last mapping this was goes
  await shmemRelease(ctx, op, shmem);
  return r;
}

/** The files the shared VMAs overlapping [s, e) map (the shmem objects among them may go). */
const sharedInos = (vmas: Vma[], s: number, e: number): number[] =>
  vmas.filter((v) => v.shared && v.file && v.end > s && v.start < e).map((v) => v.file!.ino);

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
  const s = startVpn(addr, 'madvise', pages);
  await refuseHugetlb(ctx, pid, s, s + pages, 'madvise');
  const op = ctx.ids.next('madvise');
  // The zap clears PTEs whose frames are put after the shootdown: recorded (intent.ts) so that
  // a replica dying in between leaks nothing — another runs the zap again and puts them.
  return withIntent(ctx, op, pid, 'madvise', { addr, pages }, () =>
    madviseSteps(ctx, op, pid, s, pages),
  );
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
 * Models: exit_mmap(), mm/mmap.c v3.7 (v3.6's is the same), as mmput() runs it when the last
 * mm_users reference drops (kernel/fork.c v3.7): mmu_notifier_release() first — every
 * subscriber drops everything of the mm and is unhashed, and only then are pages freed — then
 * unmap_vmas(0, -1) and free_pgtables(), and the mm is gone. No mmap_sem, neither mode: with
 * mm_users at 0 no task is left to hold it, and a device's fault holds an mm_users reference
 * across its get_user_pages (3.19 ib_umem_odp_map_dma_pages: get_task_mm ... mmput), so it
 * either keeps the exit off or finds no mm.
 *
 * In mmlab an exit is a request that a replica may get while other requests on the same pid are
 * still running (the kernel's mm_users makes that impossible). So the exit first marks the mm
 * exiting, in one script (mmExitBegin): every later fault, mmap, mmap_sem acquire (read or
 * write), pinned_vm charge and move_ptes on it refuses with ESRCH (a device's get_user_pages
 * sees EFAULT/ESRCH as it maps them), and the mm seq moves, so a do_wp_page between its steps
 * goes back to the top and finds the mm exiting. From then on nothing creates a PTE in the mm;
 * the zap walks every page-table page that exists, not only the VMAs (a munmap may have
 * detached its VMAs and not zapped yet), so it leaves none behind, and mmExit refuses to end an
 * mm that still has one (zap again). What is running on the pid when the exit begins:
 *
 *   fault (mm-1, no lease)                   exit (mm-0)
 *   alloc page P
 *                                            mmExitBegin: exiting, seq += 2
 *   fault script: ESRCH → P put back         release; zap; dead
 *   (or the script came first and installed P: the zap clears it and puts P)
 *
 *   do_wp_page (mm-1)                        exit (mm-0)
 *   wpCopyLock: PT lock ptl:0, PTE cleared
 *                                            mmExitBegin; release
 *   shootdown; set_pte_at, unlock            zap ptl:0: spins on the PT lock ...
 *                                            ... granted: clears the new PTE, puts its frame
 *   range_end; put the old page
 *   (a wpCopyLock or wpReuse after mmExitBegin: seq moved → RETRY → fault script: ESRCH)
 *
 *   madvise DONTNEED (mm-1, mmap_sem R)      exit (mm-0)
 *   range_start → hca0 sleeps ...
 *                                            mmExitBegin: does not wait for the reader
 *                                            release → hca0 drops all; zap every table; dead
 *   ... acked; zap: no table left;
 *   range_end; up_read
 *
 *   munmap (mm-1, mmap_sem W)                exit (mm-0)
 *   vmaUnmap [a, b); range_start ...
 *                                            mmExitBegin: does not wait for the writer
 *                                            release; zap every table, [a, b) too; dead
 *   zap: nothing left; range_end; up_write
 *
 * A PTE is cleared by exactly one zap script (under its PT lock), and whoever cleared it puts
 * its frame: none is put twice, none leaks. A pinned frame keeps its pin after the exit, until
 * the device deregisters (ib_umem_release: put_page). An exit that fails half way (a PT lock
 * contended past the deadline) leaves the mm exiting: exit it again. One whose replica dies is
 * run again by another replica from its intent record (orphan_ranges.ts).
 */
export async function exitMmap(ctx: MmContext, pid: number): Promise<{ freed: number }> {
  const op = ctx.ids.next('exit');
  // A replica dying half way would leave the mm exiting with PTEs and frames: recorded
  // (intent.ts), another replica runs the exit again from the top (each step is idempotent).
  return withIntent(ctx, op, pid, 'exit', {}, () => exitSteps(ctx, op, pid));
}

/** The steps of exit_mmap() for op (first run, or a take-over of a dead replica's exit). */
export async function exitSteps(
  ctx: MmContext,
  op: string,
  pid: number,
): Promise<{ freed: number }> {
  const shmem = sharedInos(await ctx.store.vmas(pid), 0, TASK_SIZE / PAGE_SIZE);
  if ((await ctx.store.mmExitBegin(pid)) === 'ESRCH')
    throw new MmlabError('ESRCH', `no process ${pid}`);
  await crashPoint(ctx, 'exit.begun');
  await mmuNotifierRelease(ctx, op, pid);
  await crashPoint(ctx, 'exit.released');
  let freed = 0;
  for (let attempt = 1; ; attempt++) {
    // unmap_vmas(&tlb, vma, 0, -1): every page table there is, whatever the VMA list says now.
    freed += (await zapPteRanges(ctx, op, pid, 0, TASK_SIZE / PAGE_SIZE)).freed;
    const r = await ctx.store.mmExit(pid);
    if (r === 'ended') break;
    // Another exit of the same pid (one that failed half way, run again) ended it first.
    if (r === 'dead' || r === 'ESRCH') return { freed };
    if (attempt >= 3)
      throw new MmlabError('EAGAIN', `pid ${pid} still has ${r.ptes} PTEs after ${attempt} zaps`);
  }
  await crashPoint(ctx, 'exit.ended');
  ctx.tracer.emit({ kind: 'process.exit', op, pid });
  await shmemRelease(ctx, op, shmem);
  return { freed };
}
