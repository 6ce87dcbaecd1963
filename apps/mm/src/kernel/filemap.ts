/**
 * Files: mm/filemap.c (the page cache: read, write, fault) and the writeback msync starts —
 * mm/msync.c, mm/page-writeback.c and page_mkclean() of mm/rmap.c, v3.7 (patched) and v3.6
 * (legacy).
 *
 * A file's pages live in its page cache ({mem}:pagecache, keys.ts): a frame per cached page,
 * holding the page's word, dirty once written (by write(), or through a writable shared
 * mapping) until writeback copies the word to the file's backing store. read() and write() go
 * through the page cache; a mapping of the file maps the cached frame itself (shared, or
 * private until a write copies it: do_wp_page never reuses a file's page).
 *
 * msync → writeback of a page (clear_page_dirty_for_io, then writepage): page_mkclean() first
 * write-protects every shared mapping of the page, so that the next write through any of them —
 * a CPU's or a device's — faults and dirties the page again instead of being lost after the
 * write-back. The seed moved its invalidate_page out of the PT lock:
 *
 *   patched (v3.7, the seed)                   legacy (v3.6)
 *   pte = page_check_address(): lock PTL       pte = page_check_address(): lock PTL
 *   pte writable (or dirty)?                   pte writable (or dirty)?
 *     ptep_clear_flush (clear, shootdown)        ptep_clear_flush_notify: clear, shootdown,
 *                                                  invalidate_page — under the PT lock
 *     set_pte_at(wrprotect, mkclean)             set_pte_at(wrprotect, mkclean)
 *   pte_unmap_unlock                           pte_unmap_unlock
 *   mmu_notifier_invalidate_page(mm, address)
 *   ... then writepage: the word to the store  ... then writepage
 *
 * In both the device's writable mapping is gone before the page is written back; in v3.6 an ODP
 * HCA sleeping in that invalidate_page sleeps under the PT lock (no-sleep-under-ptlock).
 *
 * mmlab has no page lock: the kernel's lock_page orders a write fault's set_page_dirty against
 * clear_page_dirty_for_io. Without it this interleaving would lose a write:
 *
 *   CPU write fault (shared file page)         msync
 *   set_page_dirty
 *                                              page_mkclean: no PTE maps it yet
 *                                              clear dirty, write back the old word
 *   install the PTE writable, store 7
 *                                              (the next msync: not dirty, skipped — 7 lost)
 *
 * so msync looks at every cached page of the range, not only the dirty-tagged ones, and writes
 * a page back when page_mkclean found a writable mapping of it even if PG_dirty is clear (as
 * clear_page_dirty_for_io does: "if (page_mkclean(page)) set_page_dirty(page)").
 */
import { MmlabError, PAGE_SIZE } from '@mmlab/protocol';
import { type MmContext, startVpn } from './context';
import { notifyOf } from './eras';
import { invalidatePage, ptepClearFlushNotify } from './mmu_notifier';
import { forEachPteTable, staleLease } from './pagewalk';
import type { Frame } from './page_alloc';
import { rmapScan, wakeupKswapd, withDirectReclaim } from './vmscan';
import { xipFileWrite } from './filemap_xip';

/** A new file of `pages` pages, all holes; xip: an XIP file. → its inode number */
export async function fileCreate(ctx: MmContext, pages: number, xip: boolean): Promise<number> {
  const ino = await ctx.store.fileCreate(pages, xip);
  ctx.tracer.emit({ kind: 'file.create', op: ctx.ids.next('file'), ino, pages, xip });
  return ino;
}

/** What read() and write() answer when the file or the page is not there. */
function fileError(r: 'EINVAL' | 'ENOENT', ino: number, page: number): MmlabError {
  return r === 'ENOENT'
    ? new MmlabError('ENOENT', `no file ${ino}`)
    : new MmlabError('EINVAL', `page ${page} is past the end of file ${ino}`);
}

/**
 * Models: do_generic_file_read(), mm/filemap.c v3.7 — one page, through the page cache; an XIP
 * file's (do_xip_mapping_read, mm/filemap_xip.c): its block in place, a hole reads 0 (pfn 0).
 */
export async function fileRead(
  ctx: MmContext,
  ino: number,
  page: number,
): Promise<{ value: number; pfn: number; gen: number; cached: boolean }> {
  const r = await withDirectReclaim(ctx, `the read of file ${ino}`, () =>
    ctx.store.fileRead(ino, page),
  );
  if (r === 'EINVAL' || r === 'ENOENT') throw fileError(r, ino, page);
  if (!r.cached) wakeupKswapd(ctx);
  return r;
}

/**
 * Models: generic_perform_write(), mm/filemap.c v3.7 — one word into one page, which gets dirty;
 * an XIP file's (__xip_file_write): into its block in place, allocated first when a hole.
 */
export async function fileWrite(
  ctx: MmContext,
  ino: number,
  page: number,
  value: number,
): Promise<{ pfn: number; gen: number; cached: boolean }> {
  const r = await withDirectReclaim(ctx, `the write of file ${ino}`, () =>
    ctx.store.fileWrite(ino, page, value),
  );
  if (r === 'EINVAL' || r === 'ENOENT') throw fileError(r, ino, page);
  // an XIP file's hole: __xip_file_write allocates its block (filemap_xip.ts)
  if (r === 'XIP_HOLE') return xipFileWrite(ctx, ino, page, value);
  if (!r.cached) wakeupKswapd(ctx);
  return r;
}

/**
 * Models: sys_msync(MS_SYNC), mm/msync.c v3.7 → vfs_fsync_range() → write_cache_pages(): every
 * cached page of the shared file mappings in [addr, addr + pages) is cleaned and, when dirty,
 * written back (see the top of this file). A range with a hole in it is ENOMEM, as msync
 * answers; private and anonymous mappings have nothing to write.
 */
export async function sysMsync(
  ctx: MmContext,
  pid: number,
  addr: number,
  pages: number,
): Promise<{ cached: number; cleaned: number; written: number }> {
  const s = startVpn(addr, 'msync', pages);
  const e = s + pages;
  const op = ctx.ids.next('msync');
  if (!(await ctx.store.processes()).includes(pid))
    throw new MmlabError('ESRCH', `no process ${pid}`);
  const vmas = (await ctx.store.vmas(pid))
    .filter((v) => v.end > s && v.start < e)
    .sort((a, b) => a.start - b.start);
  let covered = s;
  for (const v of vmas) {
    if (v.start > covered) break;
    covered = Math.max(covered, v.end);
  }
  if (covered < e)
    throw new MmlabError('ENOMEM', `[0x${addr.toString(16)}, +${pages} pages) is not all mapped`);
  const res = { cached: 0, cleaned: 0, written: 0 };
  for (const v of vmas) {
    if (!v.file || !v.shared) continue;
    // shmem's fsync is noop_fsync: its pages have nowhere to be written (v3.7 mm/shmem.c)
    if ((await ctx.store.fileInfo(v.file.ino))?.shmem) continue;
    for (let vpn = Math.max(s, v.start); vpn < Math.min(e, v.end); vpn++) {
      const index = vpn + v.file.delta;
      const page = await ctx.store.pagecacheLookup(v.file.ino, index);
      if (!page || page === 'ENOENT') continue;
      res.cached++;
      // clear_page_dirty_for_io(): page_mkclean, then TestClearPageDirty — and writepage
      const cleaned = await pageMkclean(ctx, op, page);
      res.cleaned += cleaned;
      const w = await ctx.store.writePage(page.pfn, page.gen, cleaned > 0);
      if (w === 'STALE' || !w.wrote) continue;
      res.written++;
      ctx.tracer.emit({
        kind: 'writeback',
        op,
        ino: w.ino,
        page: w.page,
        pfn: page.pfn,
        gen: page.gen,
        value: w.value,
        why: 'msync',
      });
    }
  }
  return res;
}

/**
 * Models: page_mkclean() → page_mkclean_file(), mm/rmap.c v3.7: page_mkclean_one on every
 * mapping of the page in a VM_SHARED VMA (the file's i_mmap tree: mmlab finds them with the
 * reverse-map scan reclaim uses, rmapScan). → how many PTEs were write-protected
 */
export async function pageMkclean(ctx: MmContext, op: string, page: Frame): Promise<number> {
  const mappings = (await rmapScan(ctx, [page])).get(`${page.pfn}:${page.gen}`) ?? [];
  let cleaned = 0;
  for (const m of mappings)
    if (m.shared && m.file && (await pageMkcleanOne(ctx, op, m.pid, m.vpn, page))) cleaned++;
  return cleaned;
}

/**
 * Models: page_mkclean_one(), mm/rmap.c — v3.7 (patched) and v3.6 (legacy); see the top of this
 * file. → whether the PTE was writable (and is write-protected now)
 */
async function pageMkcleanOne(
  ctx: MmContext,
  op: string,
  pid: number,
  vpn: number,
  page: Frame,
): Promise<boolean> {
  const notify = notifyOf(ctx, 'page_mkclean_one');
  const addr = vpn * PAGE_SIZE;
  let cleaned = false;
  await forEachPteTable(ctx, op, pid, vpn, vpn + 1, async (held) => {
    const { lock } = held;
    const token = held.lease.token;
    const r = await ctx.store.pageMkcleanOne(pid, lock, held.lease.value, token, vpn, page);
    if (!r) throw staleLease(ctx, held, 'page_mkclean_one');
    if (r === 'GONE' || r === 'CLEAN') return;
    cleaned = true;
    const was = { pfn: page.pfn, gen: page.gen };
    // ptep_clear_flush() (v3.6: _notify, invalidate_page under the lock), then set_pte_at()
    // write-protected
    await ptepClearFlushNotify(ctx, held, addr, was, r.cpumask, notify);
    ctx.tracer.emit({ kind: 'pte.set', op, pid, addr, ...was, writable: false, lock, token });
  });
  // v3.7 (the seed): after pte_unmap_unlock, before the page is written back
  if (cleaned && notify === 'page-after-unlock') await invalidatePage(ctx, op, pid, addr);
  return cleaned;
}
