/**
 * XIP files: mm/filemap_xip.c v3.7 (patched) and v3.6 (legacy) — execute in place, a file
 * mapping without a page cache.
 *
 * An XIP file's pages are its backing store's memory itself (get_xip_mem: a pfn of the device).
 * mmlab models each allocated block as a frame owned by the file for its whole life: allocated
 * zero-filled from {mem}'s free list the first time it is written (get_xip_mem(create = 1), by a
 * write() or a fault of a shared writable mapping), holding the data, never dirty, never written
 * back, never reclaimed, on no LRU list ({mem}:pagecache c<ino>:<i> / p<pfn> "ino:i:x", keys.ts).
 * A hole is not allocated: read() reads 0 from it, and a fault of a mapping that cannot write it
 * maps the sparse page — one zero-filled frame for the whole machine (__xip_sparse_page,
 * allocated on first use, held for good), read-only, each PTE holding a mapping reference of it
 * as vm_insert_page() takes.
 *
 * When the hole gets its block (xip_file_fault of a shared writable mapping, __xip_file_write),
 * every PTE still mapping the sparse page for that file page must go: __xip_unmap (xipUnmap
 * below) clears each one under its PT lock, and the secondary MMUs get invalidate_page before the
 * sparse page's reference is released. The seed moved that invalidate_page out of the PT lock:
 *
 *   patched (v3.7, the seed)                   legacy (v3.6)
 *   pte = page_check_address(sparse page):     pte = page_check_address(sparse page):
 *     lock PTL                                   lock PTL
 *   ptep_clear_flush (clear, shootdown)        ptep_clear_flush_notify: clear, shootdown,
 *                                                invalidate_page — under the PT lock
 *   page_remove_rmap                           page_remove_rmap
 *   pte_unmap_unlock                           pte_unmap_unlock
 *   mmu_notifier_invalidate_page(mm, address)
 *   page_cache_release(sparse page)            page_cache_release(sparse page)
 *
 * In both the device's translation of the sparse page is gone before the block is mapped or
 * written; in v3.6 an ODP HCA sleeping in that invalidate_page sleeps under the PT lock
 * (no-sleep-under-ptlock). The sparse page itself is never freed (the pointer holds it), so the
 * order of the release matters for the reference count only — as the kernel's comment says,
 * "must invalidate_page _before_ freeing the page".
 *
 * The race xip_sparse_seq closes: a fault that found the hole maps the sparse page after
 * __xip_unmap looked at its PTE —
 *
 *   CPU 0: read fault, private mapping         CPU 1: write() of the same page
 *   get_xip_mem(create = 0): a hole
 *   the sparse page (xipGetMem 'map')
 *                                              get_xip_mem(create = 1): the block
 *                                              __xip_unmap: rmap scan, no PTE maps it yet
 *   install the sparse page in the PTE
 *                                              copy the word into the block
 *   (CPU 0 reads 0 from the hole for good)
 *
 * — so the sparse fault opens the seqcount before it takes the page (write_seqcount_begin, in
 * the same script) and closes it once its PTE is in (or given up), and __xip_unmap waits for
 * the open ones and scans again when one opened since it began (read_seqcount_retry: the
 * kernel rescans under xip_sparse_mutex).
 *
 * Not modelled: the sparse page in a shared read-only mapping that mprotect later makes
 * writable (v3.7 maps a hole of a shared mapping to the sparse page only when the VMA may never
 * be written, VM_MAYWRITE clear, where mprotect(PROT_WRITE) is EACCES; mmlab has no VM_MAY*).
 */
import { MmlabError, PAGE_SIZE } from '@mmlab/protocol';
import { backoff, type MmContext } from './context';
import { notifyOf } from './eras';
import { invalidatePage, ptepClearFlushNotify } from './mmu_notifier';
import { forEachPteTable, staleLease } from './pagewalk';
import { type Frame, putPages } from './page_alloc';
import { rmapScan, withDirectReclaim } from './vmscan';

/** A page a file fault returns: xip says it is an XIP file's block or the sparse page. */
export type XipPage = Frame & { xip?: 'block' | 'sparse' };

/** get_xip_mem() with direct reclaim when it must allocate; its errors as the caller's. */
async function getXipMem(
  ctx: MmContext,
  ino: number,
  pgoff: number,
  kind: 'map' | 'ref' | 'none',
  create: boolean,
  what: string,
) {
  const r = await withDirectReclaim(ctx, what, () => ctx.store.xipGetMem(ino, pgoff, kind, create));
  if (r === 'SIGBUS')
    throw new MmlabError('SIGBUS', `page ${pgoff} is past the end of file ${ino}`);
  if (r === 'ENOENT' || r === 'NOTXIP')
    throw new MmlabError('EINTERNAL', `file ${ino} is ${r === 'ENOENT' ? 'gone' : 'not XIP'}`);
  return r;
}

/**
 * Models: xip_file_fault(), mm/filemap_xip.c v3.7 — the page of a fault on a mapping of an XIP
 * file, with a reference of kind ('map': the PTE the caller installs; 'ref': the page a write to
 * a private mapping copies). A block that exists: the block. A hole in a shared writable VMA
 * (VM_WRITE|VM_SHARED), for a PTE: the block allocated (create = 1), then __xip_unmap, then the
 * block. Any other hole: the sparse page (mapped read-only: the caller installs it read-only,
 * and a write to a private mapping copies it, never reusing it). For the sparse page with kind
 * 'map' the caller closes xip_sparse_seq after its install (xipSparseDone).
 */
export async function xipFileFault(
  ctx: MmContext,
  op: string,
  need: { ino: number; pgoff: number; wshared: boolean },
  kind: 'map' | 'ref',
  addr: number,
): Promise<XipPage> {
  const create = kind === 'map' && need.wshared;
  const what = `the XIP fault at 0x${addr.toString(16)}`;
  const r = await getXipMem(ctx, need.ino, need.pgoff, kind, create, what);
  if (r.new) ctx.tracer.emit({ kind: 'frame.alloc', op, pfn: r.pfn, gen: r.gen });
  const page: XipPage = { pfn: r.pfn, gen: r.gen, xip: r.r === 'BLOCK' ? 'block' : 'sparse' };
  if (r.r === 'BLOCK' && r.new) {
    // "unmap sparse mappings at pgoff from all other vmas"
    try {
      await xipUnmap(ctx, op, need.ino, need.pgoff);
    } catch (e) {
      await putPages(ctx, op, [page], kind);
      throw e;
    }
  }
  return page;
}

/**
 * Models: __xip_file_write(), mm/filemap_xip.c v3.7, for a hole (the store's fileWrite answered
 * XIP_HOLE): get_xip_mem(create = 1) allocates the block, __xip_unmap takes the sparse page away
 * from every mapping of that file page, and the word is copied into the block in place (no dirty
 * bit: the block is the store).
 */
export async function xipFileWrite(
  ctx: MmContext,
  ino: number,
  page: number,
  value: number,
): Promise<{ pfn: number; gen: number; cached: boolean }> {
  const op = ctx.ids.next('file');
  const r = await getXipMem(ctx, ino, page, 'none', true, `the write of file ${ino}`);
  if (r.new) {
    ctx.tracer.emit({ kind: 'frame.alloc', op, pfn: r.pfn, gen: r.gen });
    await xipUnmap(ctx, op, ino, page);
  }
  const w = await ctx.store.fileWrite(ino, page, value);
  if (typeof w === 'object') return w;
  // a block is never freed: once allocated, the write finds it
  throw new MmlabError('EINTERNAL', `the write of XIP file ${ino} page ${page}: ${w}`);
}

/**
 * Models: __xip_unmap(), mm/filemap_xip.c v3.7 (patched) and v3.6 (legacy); see the top of this
 * file. Every PTE that maps the sparse page for page pgoff of file ino — the kernel walks the
 * file's i_mmap tree; mmlab finds every PTE mapping the sparse page with the reverse-map scan
 * (rmapScan) and keeps those whose VMA maps this ino at this pgoff — is cleared (xipUnmapOne).
 * read_seqcount_begin waits while a sparse-page fault is open; read_seqcount_retry scans again
 * when one opened meanwhile. → how many PTEs were cleared
 */
export async function xipUnmap(
  ctx: MmContext,
  op: string,
  ino: number,
  pgoff: number,
): Promise<number> {
  const deadline = Date.now() + ctx.env.MMLAB_FAULT_DEADLINE_MS;
  let unmapped = 0;
  for (let attempt = 0; ; attempt++) {
    const begin = await ctx.store.xipSparseSeq();
    const sparse = begin.sparse;
    if (!sparse) return unmapped; // "if (!page) return": no hole was ever mapped
    if (begin.busy > 0) {
      // read_seqcount_begin(): a sparse-page fault is between its lookup and its install
      await backoff(attempt + 1, deadline, `__xip_unmap of file ${ino} page ${pgoff}`);
      continue;
    }
    const mappings = (await rmapScan(ctx, [sparse])).get(`${sparse.pfn}:${sparse.gen}`) ?? [];
    for (const m of mappings)
      if (m.index?.ino === ino && m.index.pgoff === pgoff)
        if (await xipUnmapOne(ctx, op, m.pid, m.vpn, sparse, ino, pgoff)) unmapped++;
    const end = await ctx.store.xipSparseSeq();
    // read_seqcount_retry(): no sparse-page fault opened since the scan began
    if (end.seq === begin.seq) return unmapped;
  }
}

/**
 * One mapping of __xip_unmap's loop: under pid's PT lock, page_check_address(sparse page) and
 * ptep_clear_flush (the store's tryToUnmapOne with no swap slot: the PTE is cleared if it still
 * maps the sparse page), the CPUs' TLBs shot down; v3.6 sends invalidate_page there, v3.7 after
 * pte_unmap_unlock; then page_cache_release() of the PTE's reference (xip.unmap). → whether
 * the PTE still mapped the sparse page
 */
async function xipUnmapOne(
  ctx: MmContext,
  op: string,
  pid: number,
  vpn: number,
  sparse: Frame,
  ino: number,
  pgoff: number,
): Promise<boolean> {
  const notify = notifyOf(ctx, '__xip_unmap');
  const addr = vpn * PAGE_SIZE;
  let cleared = false;
  await forEachPteTable(ctx, op, pid, vpn, vpn + 1, async (held) => {
    const { lock } = held;
    const token = held.lease.token;
    const r = await ctx.store.tryToUnmapOne(pid, lock, held.lease.value, token, vpn, sparse, null);
    if (!r) throw staleLease(ctx, held, '__xip_unmap');
    if (r === 'GONE') return;
    cleared = true;
    // ptep_clear_flush() (v3.6: _notify, invalidate_page still under the PT lock)
    await ptepClearFlushNotify(ctx, held, addr, sparse, r.cpumask, notify);
  });
  if (!cleared) return false;
  // v3.7 (the seed): after pte_unmap_unlock, "must invalidate_page _before_ freeing the page"
  if (notify === 'page-after-unlock') await invalidatePage(ctx, op, pid, addr);
  // page_remove_rmap() + page_cache_release(): the PTE's reference of the sparse page
  await putPages(ctx, op, [sparse]);
  ctx.tracer.emit({ kind: 'xip.unmap', op, pid, addr, ino, page: pgoff, ...sparse });
  return true;
}
