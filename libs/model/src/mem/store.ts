/**
 * Physical memory ({mem}): struct page and its counts, alloc_page/put_page/get_page, the frames
 * a fault allocated and has not installed (pending), and the device fence. One room: every call
 * here touches the {mem} slot only.
 */
import { type Access } from '@mmlab/protocol';
import { FRAME_BYTES, FRAME_FIELDS, FRAME_STATE, type FrameField, MEM } from '../keys';
import { StoreBase } from '../store-base';
import { type FrameView, decodeFrame, readField, recordsIn, walkFreeList } from './frame';

/** A frame a fault allocated and has not installed yet ({mem}:pending, keys.ts). */
export interface PendingFrame {
  pfn: number;
  gen: number;
  /** the mm incarnation whose fault allocated it */
  owner: string;
  pid: number;
  vpn: number;
  /**
   * the page a COW replaces with it, whose put is owed once it is installed; a negative pfn
   * (-slot): the swap entry a swap-in replaces, whose swap_free is owed
   */
  old: { pfn: number; gen: number } | null;
}

/** What a pending frame's tag says besides its gen: who allocated it, for what. */
export interface PendingTag {
  owner: string;
  pid: number;
  vpn: number;
  old?: { pfn: number; gen: number } | null;
}

/**
 * A batch of frames reclaim isolated ({mem}:pending u:<rec> → "0|incarnation|isolated|pfn:gen
 * ..."), recorded until its owner put every one back (isolateLruPages, isolatedReap).
 */
export interface IsolationRecord {
  rec: string;
  owner: string;
}

/**
 * KSM's replace_page in flight ({mem}:pending u:<rec> → "0|incarnation|replace|pid|vpn|kpfn:kgen|
 * pfn:gen"): kpage got for pid's PTE at vpn, which maps page until set_pte_at_notify; one of the
 * two mappings is owed a put (ksmReplaceGet, ksmReplaceEnd).
 */
export interface ReplaceRecord {
  rec: string;
  owner: string;
  pid: number;
  vpn: number;
  kpage: { pfn: number; gen: number };
  page: { pfn: number; gen: number };
}

/**
 * A huge page allocated and its install's puts owed ({mem}:pending u:<rec> →
 * "0|incarnation|huge|pool|pid|hvpn|pfn:gen|olds", allocHugePage / hugetlbAlloc with a record):
 * until hugeRecordEnd, the new page (THP or hugetlb pool) is owed its put if it is never
 * installed at pid's hvpn, else the olds are (a COW's old page, a collapse's small pages).
 */
export interface HugeRecord {
  rec: string;
  owner: string;
  pool: 'thp' | 'hugetlb';
  pid: number;
  hvpn: number;
  page: { pfn: number; gen: number };
  olds: Array<{ pfn: number; gen: number }>;
}

/**
 * try_to_unmap_one() in flight ({mem}:pending u:<rec> → "0|incarnation|unmap|pid|vpn|pfn:gen|
 * slot:sgen", unmapRecordOpen): the slot's swap_duplicate taken (slot 0: a file's page, none);
 * one put is owed — the page's mapping once the PTE no longer maps it, else the duplicate's.
 */
export interface UnmapRecord {
  rec: string;
  owner: string;
  pid: number;
  vpn: number;
  page: { pfn: number; gen: number };
}

/**
 * split_huge_page() in flight ({mem}:pending u:<rec> → "0|incarnation|split|pid|hvpn|pfn:gen",
 * splitRecordOpen): the compound page's mappings are being split; its end dissolves it
 * (splitHugePage with the record).
 */
export interface SplitRecord {
  rec: string;
  owner: string;
  pid: number;
  hvpn: number;
  head: { pfn: number; gen: number };
}

/** A frame of an mm incarnation's per-replica batch ({mem}:pending "gen|incarnation|reserve"). */
export interface ReserveFrame {
  pfn: number;
  gen: number;
  /** the mm incarnation whose batch it is */
  owner: string;
}

/** A pending tag "gen|incarnation|pid|vpn|old" parsed, or null (a reserve tag, or corrupt). */
function parsePendingTag(pfn: string, t: string): PendingFrame | null {
  const m = /^(\d+)\|([^|]*)\|(\d+)\|(\d+)\|(?:(-?\d+):(\d+))?$/.exec(t);
  if (!m) return null;
  return {
    pfn: Number(pfn),
    gen: Number(m[1]),
    owner: m[2],
    pid: Number(m[3]),
    vpn: Number(m[4]),
    old: m[5] === undefined ? null : { pfn: Number(m[5]), gen: Number(m[6]) },
  };
}

/** A reserve tag "gen|incarnation|reserve" parsed, or null. */
export function parseReserveTag(pfn: string, t: string): ReserveFrame | null {
  const m = /^(\d+)\|(.+)\|reserve$/.exec(t);
  return m ? { pfn: Number(pfn), gen: Number(m[1]), owner: m[2] } : null;
}

/** What shrinkPage's pageout() wrote back of a file's page (all absent: nothing). */
interface WroteBack {
  ino?: number;
  page?: number;
  value?: number;
}

export class MemStore extends StoreBase {
  /** Format memory (and the swap device: swapSlots slots, 0 = no swap) once; → frames. */
  async memFormat(frames: number, swapSlots = 0): Promise<number> {
    return this.call('memFormat', MEM, { frames, swapSlots });
  }

  /**
   * isolate_lru_pages(): up to n frames off a list's old end, each with one more ref; with rec,
   * recorded as isolation record rec of owner in the same step (isolatedReap ends it).
   */
  async isolateLruPages(
    n: number,
    list: 'inactive' | 'active' = 'inactive',
    rec: { rec: string; owner: string } | null = null,
  ): Promise<Array<{ pfn: number; gen: number }>> {
    const flat = await this.call('isolateLruPages', MEM, {
      n,
      list,
      rec: rec?.rec ?? '',
      owner: rec?.owner ?? '',
    });
    const out: Array<{ pfn: number; gen: number }> = [];
    for (let i = 0; i + 1 < flat.length; i += 2) out.push({ pfn: flat[i], gen: flat[i + 1] });
    return out;
  }

  /** putback_lru_page(): an isolated frame back on a list, without the isolation's reference. */
  async lruPutback(
    pfn: number,
    gen: number,
    list: 'inactive' | 'active',
    rec = '',
  ): Promise<boolean> {
    return (await this.call('lruPutback', MEM, { pfn, gen, list, rec })) === 1;
  }

  /**
   * try_to_unmap_one() of page at pid's vpn begins, recorded as rec of owner; slot (null: a file's
   * page) gets its swap_duplicate in the same step. → false: the slot is stale, nothing done.
   */
  async unmapRecordOpen(
    rec: string,
    owner: string,
    pid: number,
    vpn: number,
    page: { pfn: number; gen: number },
    slot: { slot: number; gen: number } | null,
  ): Promise<boolean> {
    const r = await this.call('unmapRecordOpen', MEM, {
      rec,
      owner,
      pid,
      vpn,
      pfn: page.pfn,
      gen: page.gen,
      slot: slot?.slot ?? 0,
      slotGen: slot?.gen ?? 0,
    });
    return r === 1;
  }

  /**
   * The end of try_to_unmap_one record rec of owner: unmapped — the page's mapping put; else the
   * slot's duplicate back. → frames freed, or null (ended already).
   */
  async unmapRecordEnd(rec: string, owner: string, unmapped: boolean): Promise<number[] | null> {
    const r = await this.call('unmapRecordEnd', MEM, { rec, owner, unmapped: unmapped ? 1 : 0 });
    return r.r === 'OK' ? r.freed : null;
  }

  /** The end of isolation record rec of owner (its own, or a dead one's): what is still isolated goes back. */
  async isolatedReap(
    rec: string,
    owner: string,
  ): Promise<{ back: number; freed: Array<{ pfn: number; gen: number }> }> {
    const r = await this.call('isolatedReap', MEM, { rec, owner });
    if (r.r === 'GONE') return { back: 0, freed: [] };
    const freed: Array<{ pfn: number; gen: number }> = [];
    for (let i = 0; i + 1 < r.freed.length; i += 2)
      freed.push({ pfn: r.freed[i], gen: r.freed[i + 1] });
    return { back: r.back, freed };
  }

  /** add_to_swap(): → the frame's swap slot (and the slot's gen), 'ENOSPC', 'STALE' or 'FILE'. */
  async addToSwap(
    pfn: number,
    gen: number,
  ): Promise<{ slot: number; gen: number } | 'ENOSPC' | 'STALE' | 'FILE'> {
    const r = await this.call('addToSwap', MEM, { pfn, gen });
    return r.r === 'OK' ? { slot: r.slot, gen: r.slotGen } : r.r;
  }

  /** pageout() + __remove_mapping() or putback (shrinkPage in mem/scripts.ts). */
  async shrinkPage(
    pfn: number,
    gen: number,
    referenced: boolean,
    rec = '',
  ): Promise<
    | ({ r: 'FREED' } & WroteBack)
    | ({ r: 'KEPT'; map: number; ref: number } & WroteBack)
    | { r: 'STALE' }
  > {
    return this.call('shrinkPage', MEM, { pfn, gen, referenced: referenced ? 1 : 0, rec });
  }

  /** A new file of `pages` pages (xip: no page cache). → its inode number */
  async fileCreate(pages: number, xip: boolean, shmem = false): Promise<number> {
    return this.call('fileCreate', MEM, { pages, xip: xip ? 1 : 0, shmem: shmem ? 1 : 0 });
  }

  /** A file's size in pages, whether it is XIP or shmem; null: no such file. */
  async fileInfo(ino: number): Promise<{ pages: number; xip: boolean; shmem: boolean } | null> {
    const r = await this.call('fileInfo', MEM, { ino });
    return r.r === 'OK' ? { pages: r.pages, xip: r.xip === 1, shmem: r.shmem === 1 } : null;
  }

  /** page->index of page-cache frames: pfn → {ino, index} (absent: not a file's page). */
  async pageIndexes(pfns: number[]): Promise<Map<number, { ino: number; index: number }>> {
    const out = new Map<number, { ino: number; index: number }>();
    if (pfns.length === 0) return out;
    const r = await this.call('pageIndexes', MEM, { pfns });
    pfns.forEach((pfn, i) => {
      const m = /^(\d+):(\d+)$/.exec(r[i] ?? '');
      if (m) out.set(pfn, { ino: Number(m[1]), index: Number(m[2]) });
    });
    return out;
  }

  /** shmem_evict_inode(): a shmem object whose last mapping went; → the frames freed. */
  async shmemEvict(ino: number): Promise<Array<{ pfn: number; gen: number }>> {
    const r = await this.call('shmemEvict', MEM, { ino });
    const out: Array<{ pfn: number; gen: number }> = [];
    if (r.r === 'OK')
      for (let i = 0; i + 1 < r.freed.length; i += 2)
        out.push({ pfn: r.freed[i], gen: r.freed[i + 1] });
    return out;
  }

  /** filemap_fault(): page `page` of file ino from its page cache, with a reference (kind). */
  async filemapFault(
    ino: number,
    page: number,
    kind: 'map' | 'ref',
  ): Promise<
    { pfn: number; gen: number; cached: boolean } | 'SIGBUS' | 'ENOENT' | 'ENOMEM' | 'XIP'
  > {
    const r = await this.call('filemapFault', MEM, { ino, page, kind });
    return r.r === 'OK' ? { pfn: r.pfn, gen: r.gen, cached: r.cached === 1 } : r.r;
  }

  /** read() of one page of a file through its page cache. */
  async fileRead(
    ino: number,
    page: number,
  ): Promise<
    { value: number; pfn: number; gen: number; cached: boolean } | 'EINVAL' | 'ENOENT' | 'ENOMEM'
  > {
    const r = await this.call('fileRead', MEM, { ino, page });
    return r.r === 'OK' ? { value: r.value, pfn: r.pfn, gen: r.gen, cached: r.cached === 1 } : r.r;
  }

  /**
   * write() of one word to one page of a file, through its page cache (the page gets dirty); an
   * XIP file's block in place ('XIP_HOLE': a hole, the block is to be allocated first).
   */
  async fileWrite(
    ino: number,
    page: number,
    value: number,
  ): Promise<
    { pfn: number; gen: number; cached: boolean } | 'EINVAL' | 'ENOENT' | 'ENOMEM' | 'XIP_HOLE'
  > {
    const r = await this.call('fileWrite', MEM, { ino, page, value });
    return r.r === 'OK' ? { pfn: r.pfn, gen: r.gen, cached: r.cached === 1 } : r.r;
  }

  /** set_page_dirty() of a file's page a write fault maps writable. */
  async setPageDirty(pfn: number, gen: number): Promise<boolean> {
    return (await this.call('setPageDirty', MEM, { pfn, gen })) === 1;
  }

  /** The frame caching a file's page (and PG_dirty); null: not cached; 'ENOENT': no file. */
  async pagecacheLookup(
    ino: number,
    page: number,
  ): Promise<{ pfn: number; gen: number; dirty: boolean } | null | 'ENOENT'> {
    const r = await this.call('pagecacheLookup', MEM, { ino, page });
    if (r.r === 'ENOENT') return 'ENOENT';
    return r.r === 'OK' ? { pfn: r.pfn, gen: r.gen, dirty: r.dirty === 1 } : null;
  }

  /**
   * get_xip_mem() of page `page` of XIP file ino: its block (create: allocated when a hole), or
   * the sparse page for a hole; with the reference kind. new: allocated by this call.
   */
  async xipGetMem(
    ino: number,
    page: number,
    kind: 'map' | 'ref' | 'none',
    create: boolean,
  ): Promise<
    | { r: 'BLOCK' | 'SPARSE'; pfn: number; gen: number; new: boolean }
    | 'SIGBUS'
    | 'ENOENT'
    | 'NOTXIP'
    | 'ENOMEM'
  > {
    const r = await this.call('xipGetMem', MEM, { ino, page, kind, create: create ? 1 : 0 });
    return r.r === 'BLOCK' || r.r === 'SPARSE' ? { ...r, new: r.new === 1 } : r.r;
  }

  /** write_seqcount_end(&xip_sparse_seq) of a sparse-page fault (xipGetMem kind 'map'). */
  async xipSparseDone(): Promise<void> {
    await this.call('xipSparseDone', MEM, {});
  }

  /** __xip_sparse_page (null: never allocated) and xip_sparse_seq (seq: opened ever; busy: now). */
  async xipSparseSeq(): Promise<{
    sparse: { pfn: number; gen: number } | null;
    seq: number;
    busy: number;
  }> {
    const r = await this.call('xipSparseSeq', MEM, {});
    return { sparse: r.pfn ? { pfn: r.pfn, gen: r.gen } : null, seq: r.seq, busy: r.busy };
  }

  /** clear_page_dirty_for_io() + writepage() of a page-cache frame, after page_mkclean. */
  async writePage(
    pfn: number,
    gen: number,
    mkcleaned: boolean,
  ): Promise<{ ino: number; page: number; value: number; wrote: boolean } | 'STALE'> {
    const r = await this.call('writePage', MEM, { pfn, gen, mkcleaned: mkcleaned ? 1 : 0 });
    return r.r === 'OK' ? { ino: r.ino, page: r.page, value: r.value, wrote: r.wrote === 1 } : r.r;
  }

  /** do_swap_page()'s page for swap entry (slot, gen): the swap cache's, or read in. */
  async swapinPage(
    slot: number,
    slotGen: number,
    fault: { owner: string; pid: number; vpn: number } | null = null,
  ): Promise<{ pfn: number; gen: number; cached: boolean; tagged: boolean } | 'STALE' | 'ENOMEM'> {
    const tag = fault ? `${fault.owner}|${fault.pid}|${fault.vpn}|-${slot}:${slotGen}` : '';
    const r = await this.call('swapinPage', MEM, { slot, slotGen, tag });
    return r.r === 'OK'
      ? { pfn: r.pfn, gen: r.gen, cached: r.cached === 1, tagged: r.tagged === 1 }
      : r.r;
  }

  /** reuse_swap_page(): may a write fault reuse (pfn, gen) in place? */
  async reuseSwapPage(
    pfn: number,
    gen: number,
  ): Promise<{ reuse: boolean; map: number; swapcount: number }> {
    return this.call('reuseSwapPage', MEM, { pfn, gen });
  }

  /** The swap device and the LRU lists' lengths. */
  async swapInfo(): Promise<{
    slots: number;
    free: number;
    cached: number;
    inactive: number;
    active: number;
  }> {
    return this.call('swapInfo', MEM, {});
  }

  /** alloc_page(): → {pfn, gen} or null when memory is exhausted; tag: a fault's pending frame. */
  async allocPage(
    copyFrom: number | null,
    mapcount = 1,
    tag: PendingTag | null = null,
  ): Promise<{ pfn: number; gen: number } | null> {
    const t = tag
      ? `${tag.owner}|${tag.pid}|${tag.vpn}|${tag.old ? `${tag.old.pfn}:${tag.old.gen}` : ''}`
      : '';
    const r = await this.call('allocPage', MEM, { copyFrom: copyFrom ?? '', mapcount, tag: t });
    return r.r === 'OK' ? { pfn: r.pfn, gen: r.gen } : null;
  }

  /**
   * put_page() for each frame: → frames freed, and pfns that were not live (double free).
   * 'unpin' (a device's pins): all or nothing — with any bad pfn, nothing is applied. With a
   * batch id, a batch applied already is not applied again (nothing freed, nothing bad).
   * 'pending': frames owner's fault allocated and did not install (only those still tagged as
   * its own: one reaped meanwhile is skipped).
   */
  async putPages(
    pages: Array<{ pfn: number; gen: number }>,
    kind: 'map' | 'ref' | 'unpin' | 'pending' = 'map',
    batch = '',
    owner = '',
  ): Promise<{ freed: number[]; bad: number[] }> {
    if (pages.length === 0) return { freed: [], bad: [] };
    return this.call('putPages', MEM, { kind, batch, owner, pages: [...pages] });
  }

  /** owner's pending frames are installed now; → frames freed by the COW puts they owed. */
  async pagesInstalled(
    owner: string,
    pages: ReadonlyArray<{ pfn: number; gen: number }>,
  ): Promise<number[]> {
    if (pages.length === 0) return [];
    return this.call('pagesInstalled', MEM, { owner, pages: [...pages] });
  }

  /** Every pending frame ({mem}:pending), tag parsed (a tag that does not parse is left out). */
  async pendingFrames(): Promise<PendingFrame[]> {
    return (await this.pendingAndReserve()).pending;
  }

  /**
   * The pending frames and the per-replica batches' frames ({mem}:pending), read in one call
   * (the reaper's pass reads both; a tag that parses as neither is left out).
   */
  async pendingAndReserve(): Promise<{
    pending: PendingFrame[];
    reserve: ReserveFrame[];
    isolated: IsolationRecord[];
    replacing: ReplaceRecord[];
    huge: HugeRecord[];
    splitting: SplitRecord[];
    unmapping: UnmapRecord[];
  }> {
    const all = await this.redis.hgetall(MEM.pending);
    const pending: PendingFrame[] = [];
    const reserve: ReserveFrame[] = [];
    const isolated: IsolationRecord[] = [];
    const replacing: ReplaceRecord[] = [];
    const huge: HugeRecord[] = [];
    const splitting: SplitRecord[] = [];
    const unmapping: UnmapRecord[] = [];
    for (const [pfn, t] of Object.entries(all)) {
      if (pfn.startsWith('u:')) {
        const m = /^0\|([^|]+)\|isolated\|/.exec(t);
        if (m) isolated.push({ rec: pfn.slice(2), owner: m[1] });
        const r = /^0\|([^|]+)\|replace\|(\d+)\|(\d+)\|(\d+):(\d+)\|(\d+):(\d+)$/.exec(t);
        if (r)
          replacing.push({
            rec: pfn.slice(2),
            owner: r[1],
            pid: Number(r[2]),
            vpn: Number(r[3]),
            kpage: { pfn: Number(r[4]), gen: Number(r[5]) },
            page: { pfn: Number(r[6]), gen: Number(r[7]) },
          });
        const h = /^0\|([^|]+)\|huge\|(thp|hugetlb)\|(\d+)\|(\d+)\|(\d+):(\d+)\|(.*)$/.exec(t);
        if (h)
          huge.push({
            rec: pfn.slice(2),
            owner: h[1],
            pool: h[2] as 'thp' | 'hugetlb',
            pid: Number(h[3]),
            hvpn: Number(h[4]),
            page: { pfn: Number(h[5]), gen: Number(h[6]) },
            olds: h[7]
              .split(' ')
              .filter(Boolean)
              .map((x) => {
                const [p, g] = x.split(':').map(Number);
                return { pfn: p, gen: g };
              }),
          });
        const sp = /^0\|([^|]+)\|split\|(\d+)\|(\d+)\|(\d+):(\d+)$/.exec(t);
        if (sp)
          splitting.push({
            rec: pfn.slice(2),
            owner: sp[1],
            pid: Number(sp[2]),
            hvpn: Number(sp[3]),
            head: { pfn: Number(sp[4]), gen: Number(sp[5]) },
          });
        const um = /^0\|([^|]+)\|unmap\|(\d+)\|(\d+)\|(\d+):(\d+)\|\d+:\d+$/.exec(t);
        if (um)
          unmapping.push({
            rec: pfn.slice(2),
            owner: um[1],
            pid: Number(um[2]),
            vpn: Number(um[3]),
            page: { pfn: Number(um[4]), gen: Number(um[5]) },
          });
        continue;
      }
      const p = parsePendingTag(pfn, t);
      if (p) pending.push(p);
      const r = p ? null : parseReserveTag(pfn, t);
      if (r) reserve.push(r);
    }
    return { pending, reserve, isolated, replacing, huge, splitting, unmapping };
  }

  /**
   * rmqueueBulk: report owner's batch frames (installed: a fault installed it; else given back
   * unused, freed), then take up to `want` frames for its batch (charged, tagged reserve).
   */
  async rmqueueBulk(
    owner: string,
    want: number,
    /** at: when a fault installed it (ms since the epoch): its place on the LRU */
    pages: ReadonlyArray<{ pfn: number; gen: number; installed: boolean; at?: number }>,
  ): Promise<{ nrFree: number; freed: number[]; taken: Array<{ pfn: number; gen: number }> }> {
    const r = await this.call('rmqueueBulk', MEM, {
      owner,
      want,
      pages: pages.map((p) => ({
        pfn: p.pfn,
        gen: p.gen,
        installed: p.installed ? (1 as const) : (0 as const),
        at: Math.round((p.at ?? 0) * 1000),
      })),
    });
    const taken: Array<{ pfn: number; gen: number }> = [];
    for (let i = 0; i + 1 < r.taken.length; i += 2)
      taken.push({ pfn: r.taken[i], gen: r.taken[i + 1] });
    return { nrFree: r.nrFree, freed: r.freed, taken };
  }

  /** A dead incarnation's batch: the installed frames kept, the others freed (reserveReap). */
  async reserveReap(
    owner: string,
    installed: ReadonlyArray<{ pfn: number; gen: number }>,
  ): Promise<{ kept: number; freed: number[] }> {
    return this.call('reserveReap', MEM, { owner, installed: [...installed] });
  }

  /** Reap a dead incarnation's pending frame (pendingReap); → what was done, frames freed. */
  async pendingReap(
    f: PendingFrame,
    installed: boolean,
  ): Promise<{ r: 'GONE' | 'FORWARD' | 'BACK'; freed: number[] }> {
    const r = await this.call('pendingReap', MEM, {
      pfn: f.pfn,
      gen: f.gen,
      owner: f.owner,
      installed: installed ? 1 : 0,
    });
    return { r: r.r, freed: r.r === 'GONE' ? [] : r.freed };
  }

  /** Roll back fork's get_page batch (batchUndo); → frames freed. */
  async batchUndo(
    batch: string,
    pages: ReadonlyArray<{ pfn: number; gen: number }>,
  ): Promise<{ r: 'PUT' | 'NOT_APPLIED' | 'UNDONE'; freed: number[] }> {
    const r = await this.call('batchUndo', MEM, { batch, pages: [...pages] });
    return { r: r.r, freed: r.r === 'PUT' ? r.freed : [] };
  }

  /** A load or store by agent through a translation to pfn; 'FENCED' when agent was fenced off. */
  async frameAccess(
    pfn: number,
    op: Access,
    value: number | undefined,
    agent: string,
  ): Promise<{ gen: number; state: string; value: number } | 'FENCED' | null> {
    const r = await this.call('frameAccess', MEM, { pfn, op, value: value ?? 0, agent });
    if (r.r === 'FENCED') return 'FENCED';
    if (r.r !== 'OK') return null;
    return { gen: r.gen, state: r.state, value: r.value };
  }

  /** Fence agent: its device accesses are refused from now on. */
  async fence(agent: string): Promise<void> {
    await this.redis.sadd(MEM.fenced, agent);
  }

  async unfence(agent: string): Promise<void> {
    await this.redis.srem(MEM.fenced, agent);
  }

  async isFenced(agent: string): Promise<boolean> {
    return (await this.redis.sismember(MEM.fenced, agent)) === 1;
  }

  async memInfo(): Promise<{ frames: number; free: number }> {
    return this.call('memInfo', MEM, {});
  }

  /**
   * The frame table, its free list and the frame count, read together (one MULTI on {mem}):
   * what fsck checks. Every record in the table (pfns 0..frames, or fewer if the string is
   * short), decoded; the free list as walkFreeList gives it.
   */
  async memTable(): Promise<{
    frames: number;
    frame: Map<number, FrameView>;
    freeList: number[];
    /** pfn → page->flags, for the frames that have any set (PAGE_FLAGS) */
    flags: Map<number, number>;
  }> {
    const r = await this.redis
      .multi()
      .hmget(MEM.meta, 'frames', 'free', 'hwm')
      .getBuffer(MEM.frames)
      .exec();
    const [frames, head, hwm] = ((r?.[0]?.[1] as Array<string | null>) ?? []).map((v) =>
      Number(v ?? 0),
    );
    const buf = (r?.[1]?.[1] as Buffer | null) ?? Buffer.alloc(0);
    const frame = new Map<number, FrameView>();
    const flags = new Map<number, number>();
    for (let pfn = 0; pfn < recordsIn(buf); pfn++) {
      frame.set(pfn, decodeFrame(buf, pfn));
      const fl = readField(buf, pfn * FRAME_BYTES, 'flags');
      if (fl !== 0) flags.set(pfn, fl);
    }
    return { frames, frame, freeList: walkFreeList(buf, head, hwm, frames), flags };
  }

  /** Frame table snapshot (tests and diagnostics). */
  async frames(): Promise<
    Map<number, { gen: number; ref: number; map: number; state: string; data: number }>
  > {
    return (await this.memTable()).frame;
  }

  /** The free list, in the order frames will be allocated (the next one first). */
  async freeList(): Promise<number[]> {
    return (await this.memTable()).freeList;
  }

  /**
   * Write fields of pfn's record as they are, nothing else checked or kept in step: for tests
   * that corrupt the table on purpose (fsck's). state by name or by its raw byte.
   */
  async frameSet(
    pfn: number,
    fields: Partial<Record<Exclude<FrameField, 'state'>, number>> & {
      state?: keyof typeof FRAME_STATE | number;
    },
  ): Promise<void> {
    const args: Array<string | number> = [];
    for (const [f, v] of Object.entries(fields) as Array<[FrameField, string | number]>) {
      const { type, offset } = FRAME_FIELDS[f];
      const value = typeof v === 'string' ? FRAME_STATE[v as keyof typeof FRAME_STATE] : v;
      args.push('SET', type, (pfn * FRAME_BYTES + offset) * 8, value);
    }
    if (args.length > 0) await this.redis.call('BITFIELD', MEM.frames, ...args);
  }

  /**
   * Push pfn at the head of the free list as it is (its record's state and counts untouched):
   * for tests that corrupt the list on purpose (a frame listed twice, a used frame listed).
   */
  async freeListPush(pfn: number): Promise<void> {
    const head = Number((await this.redis.hget(MEM.meta, 'free')) ?? 0);
    await this.frameSet(pfn, { next: head });
    await this.redis.hset(MEM.meta, 'free', pfn);
  }

  /** copy_user_highpage(src → dst); with old (src's frame), dst's pending tag owes its put. */
  async copyPage(
    src: number,
    dst: number,
    old: { pfn: number; gen: number } | null = null,
  ): Promise<void> {
    await this.call('copyPage', MEM, { src, dst, old: old ? `${old.pfn}:${old.gen}` : '' });
  }

  /**
   * page_count(), page_mapcount() and the gen of pfn, read together (one GETRANGE of its
   * record); the gen tells a frame freed and reused since the caller looked apart.
   */
  async pageCounts(pfn: number): Promise<{ ref: number; map: number; gen: number }> {
    const buf = await this.redis.getrangeBuffer(
      MEM.frames,
      pfn * FRAME_BYTES,
      (pfn + 1) * FRAME_BYTES - 1,
    );
    if (pfn < 0 || buf.length < FRAME_BYTES) return { ref: 0, map: 0, gen: 0 };
    return {
      ref: readField(buf, 0, 'ref'),
      map: readField(buf, 0, 'map'),
      gen: readField(buf, 0, 'gen'),
    };
  }

  /** get_page() for each frame: a new mapping ('map', fork) or a pin ('ref'); → pfns no longer live. */
  async getPages(
    pages: ReadonlyArray<{ pfn: number; gen: number }>,
    kind: 'map' | 'ref',
    /** a device's pin ('ref'): '<agent>@<pid>', recorded for its unpin (putPages 'unpin') */
    owner = '',
  ): Promise<number[]> {
    if (pages.length === 0) return [];
    const r = await this.call('getPages', MEM, { kind, batch: '', owner, pages: [...pages] });
    if (r.r !== 'OK') throw new Error(`getPages without a batch answered ${r.r}`);
    return r.bad;
  }

  /**
   * getPages as batch (fork's chunk <id>#c<n>), applied once: → pfns no longer live, 'DONE' if
   * it was applied already, 'UNDONE' if it was rolled back (batchUndo) first.
   */
  async getPagesBatch(
    pages: ReadonlyArray<{ pfn: number; gen: number }>,
    kind: 'map' | 'ref',
    batch: string,
  ): Promise<number[] | 'DONE' | 'UNDONE'> {
    const r = await this.call('getPages', MEM, { kind, batch, owner: '', pages: [...pages] });
    return r.r === 'OK' ? r.bad : r.r;
  }

  /** Forget the {mem}:once marks of an operation's batches (its intent record is gone). */
  async onceForget(batches: readonly string[]): Promise<void> {
    if (batches.length > 0) await this.redis.hdel(MEM.once, ...batches);
  }
}
