/**
 * mm/fremap.c v3.7 (v3.6 alike): remap_file_pages(), nonlinear mappings.
 *
 * remap_file_pages maps arbitrary pages of a file into a window of an existing shared mapping
 * of it without new VMAs: the VMA becomes VM_NONLINEAR and each PTE of the window is a file PTE
 * (pgoff_to_pte) until a fault maps the page it names (do_nonlinear_fault). page_mkclean cannot
 * see nonlinear mappings, so for a file whose pages are dirty-accounted (mapping_cap_account_
 * dirty: mmlab's files, which msync writes back) v3.7 emulates the call with a linear VMA of its
 * own (mmap_region over the window); only shmem (MAP_SHARED|MAP_ANONYMOUS, tmpfs) gets
 * nonlinear mappings. Reclaim unmaps pages of a nonlinear VMA by clusters
 * (try_to_unmap_cluster, vmscan.ts).
 *
 *   sys_remap_file_pages (v3.7 and v3.6: the range brackets both)
 *   down_write(mmap_sem); vma->vm_flags |= VM_NONLINEAR
 *   mmu_notifier_invalidate_range_start(start, start + size)
 *   for each page: install_file_pte: lock PTL; zap_pte (clear, flush, put the page); set the
 *                  file PTE; unlock
 *   mmu_notifier_invalidate_range_end(start, start + size)
 *   make_pages_present(start, start + size)   (the faults map the pages the file PTEs name)
 *
 * v3.7 takes mmap_sem for read and upgrades to write only to set VM_NONLINEAR the first time;
 * mmlab holds it for write throughout (one writer at a time either way for the first remap).
 */
import { MmlabError, PAGE_SIZE, PTRS_PER_PTE } from '@mmlab/protocol';
import { pteFrameRef, pteLockName } from '@mmlab/model';
import { type MmContext, startVpn } from './context';
import { mmapWriteLock, mmapWriteUnlock, ptlLock, ptlUnlock, underPtl } from './locks';
import { handleMmFault, zapPageRange } from './memory';
import { invalidateRangeEnd, invalidateRangeStart, withinRange } from './mmu_notifier';
import { type Frame, putPages } from './page_alloc';
import { staleLease } from './pagewalk';
import { flushTlbRange } from './tlbflush';

/** Models: sys_remap_file_pages(), mm/fremap.c v3.7. */
export async function sysRemapFilePages(
  ctx: MmContext,
  pid: number,
  addr: number,
  pages: number,
  pgoff: number,
): Promise<{ nonlinear: boolean; ptes: number }> {
  const s = startVpn(addr, 'remap_file_pages', pages);
  const e = s + pages;
  const op = ctx.ids.next('remap');
  const sem = await mmapWriteLock(ctx, pid, op);
  let populate: 'read' | 'write' | null = null;
  let out: { nonlinear: boolean; ptes: number };
  try {
    const vma = await ctx.store.findVma(pid, s);
    if (!vma || e > vma.end || !vma.shared || !vma.file)
      throw new MmlabError(
        'EINVAL',
        `remap_file_pages: [0x${addr.toString(16)}, +${pages} pages) is not inside one shared mapping of a file`,
      );
    // "Don't need a nonlinear mapping, exit success"
    if (!vma.nonlinear && pgoff === s + vma.file.delta) return { nonlinear: false, ptes: 0 };
    const info = await ctx.store.fileInfo(vma.file.ino);
    const start = s * PAGE_SIZE;
    const end = e * PAGE_SIZE;
    if (!vma.nonlinear && !info?.shmem) {
      // mapping_cap_account_dirty(): mmap_region(MAP_FIXED) over the window — do_munmap of it
      // (zap inside a range), then a VMA of its own at pgoff. Its pages fault in later.
      const { zapped } = await zapPageRange(ctx, op, pid, s, e, 'unmap');
      const r = await ctx.store.vmaRemap(pid, sem.lease.value, s, e, pgoff, false);
      if (!r) throw new MmlabError('ESTALE', `lost mmap_sem of pid ${pid}`);
      if ('einval' in r) throw new MmlabError('EINVAL', `remap_file_pages: ${r.einval}`);
      ctx.tracer.emit({ kind: 'vma.remap', op, pid, start, end, pgoff, nonlinear: false });
      return (out = { nonlinear: false, ptes: zapped });
    }
    if (!vma.nonlinear) {
      const r = await ctx.store.vmaRemap(pid, sem.lease.value, s, e, pgoff, true);
      if (!r) throw new MmlabError('ESTALE', `lost mmap_sem of pid ${pid}`);
      if ('einval' in r) throw new MmlabError('EINVAL', `remap_file_pages: ${r.einval}`);
    }
    ctx.tracer.emit({ kind: 'vma.remap', op, pid, start, end, pgoff, nonlinear: true });
    const range = await invalidateRangeStart(ctx, op, pid, start, end, 'unmap');
    try {
      await withinRange(range, () => installFilePtes(ctx, op, pid, s, e, pgoff));
    } finally {
      await invalidateRangeEnd(ctx, range, start, end);
    }
    populate = vma.prot === 'rw' ? 'write' : vma.prot === 'r' ? 'read' : null;
    out = { nonlinear: true, ptes: pages };
  } finally {
    await mmapWriteUnlock(ctx, sem);
  }
  // make_pages_present(): each page the file PTEs name is faulted in (do_nonlinear_fault)
  if (populate)
    for (let vpn = s; vpn < e; vpn++)
      await handleMmFault(ctx, pid, vpn * PAGE_SIZE, populate, 'mm');
  return out;
}

/**
 * Models: generic_file_remap_pages() → install_file_pte() → zap_pte(), mm/fremap.c v3.7, over
 * every page-table page of [s, e) (get_locked_pte creates one that does not exist): under its
 * PT lock the old PTEs go (present ones cleared and shot down, their pages dirtied when they
 * were writable and put once no TLB can reach them; swap entries freed) and the file PTEs are
 * set.
 */
async function installFilePtes(
  ctx: MmContext,
  op: string,
  pid: number,
  s: number,
  e: number,
  pgoff: number,
): Promise<void> {
  const put: Frame[] = [];
  try {
    for (let pmd = Math.floor(s / PTRS_PER_PTE); pmd * PTRS_PER_PTE < e; pmd++) {
      const ts = Math.max(s, pmd * PTRS_PER_PTE);
      const te = Math.min(e, (pmd + 1) * PTRS_PER_PTE);
      const held = await ptlLock(ctx, pid, pteLockName(pmd), op);
      try {
        await underPtl(held, async () => {
          const { lock, lease } = held;
          const r = await ctx.store.installFilePtes(
            pid,
            lock,
            lease.value,
            lease.token,
            ts,
            te,
            pgoff + ts - s,
          );
          if (!r) throw staleLease(ctx, held, 'install_file_pte');
          for (const z of r.zapped.filter((p) => !p.swap)) {
            ctx.tracer.emit({
              kind: 'pte.clear',
              op,
              pid,
              addr: z.vpn * PAGE_SIZE,
              pfn: z.pfn,
              gen: z.gen,
              lock,
              token: lease.token,
            });
            // "if (pte_dirty(pte)) set_page_dirty(page)"
            if (z.writable) await ctx.store.setPageDirty(z.pfn, z.gen);
          }
          if (r.zapped.length)
            await flushTlbRange(ctx, op, pid, ts * PAGE_SIZE, te * PAGE_SIZE, r.cpumask);
          put.push(...r.zapped.flatMap(pteFrameRef));
        });
      } finally {
        await ptlUnlock(ctx, held);
      }
    }
  } finally {
    // page_remove_rmap + page_cache_release, every TLB that could map them flushed
    if (put.length) await putPages(ctx, op, put);
  }
}
