/**
 * Physical memory ({mem}): struct page and its counts, alloc_page/put_page/get_page, the frames
 * a fault allocated and has not installed (pending), and the device fence. One room: every call
 * here touches the {mem} slot only.
 */
import { type Access } from '@mmlab/protocol';
import { MEM } from '../keys';
import { StoreBase } from '../store-base';

/** A frame a fault allocated and has not installed yet ({mem}:pending, keys.ts). */
export interface PendingFrame {
  pfn: number;
  gen: number;
  /** the mm incarnation whose fault allocated it */
  owner: string;
  pid: number;
  vpn: number;
  /** the page a COW replaces with it, whose put is owed once it is installed */
  old: { pfn: number; gen: number } | null;
}

/** What a pending frame's tag says besides its gen: who allocated it, for what. */
export interface PendingTag {
  owner: string;
  pid: number;
  vpn: number;
  old?: { pfn: number; gen: number } | null;
}

export class MemStore extends StoreBase {
  async memFormat(frames: number): Promise<number> {
    return this.call('memFormat', MEM, { frames });
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
    const all = await this.redis.hgetall(MEM.pending);
    const out: PendingFrame[] = [];
    for (const [pfn, t] of Object.entries(all)) {
      const m = /^(\d+)\|([^|]*)\|(\d+)\|(\d+)\|(?:(\d+):(\d+))?$/.exec(t);
      if (!m) continue;
      out.push({
        pfn: Number(pfn),
        gen: Number(m[1]),
        owner: m[2],
        pid: Number(m[3]),
        vpn: Number(m[4]),
        old: m[5] === undefined ? null : { pfn: Number(m[5]), gen: Number(m[6]) },
      });
    }
    return out;
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

  /** Frame table snapshot (tests and diagnostics). */
  async frames(): Promise<
    Map<number, { gen: number; ref: number; map: number; state: string; data: number }>
  > {
    const [gen, ref, map, state, data] = await Promise.all(
      [MEM.gen, MEM.ref, MEM.map, MEM.state, MEM.data].map((k) => this.redis.hgetall(k)),
    );
    const out = new Map<
      number,
      { gen: number; ref: number; map: number; state: string; data: number }
    >();
    for (const pfn of Object.keys(gen))
      out.set(Number(pfn), {
        gen: Number(gen[pfn]),
        ref: Number(ref[pfn]),
        map: Number(map[pfn]),
        state: state[pfn],
        data: Number(data[pfn]),
      });
    return out;
  }

  async freeList(): Promise<number[]> {
    return (await this.redis.lrange(MEM.free, 0, -1)).map(Number);
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
   * page_count(), page_mapcount() and the gen of pfn, read together (one MULTI on {mem}); the
   * gen tells a frame freed and reused since the caller looked apart.
   */
  async pageCounts(pfn: number): Promise<{ ref: number; map: number; gen: number }> {
    const f = String(pfn);
    const r = await this.redis.multi().hget(MEM.ref, f).hget(MEM.map, f).hget(MEM.gen, f).exec();
    const v = (i: number): number => Number((r?.[i]?.[1] as string | null) ?? 0);
    return { ref: v(0), map: v(1), gen: v(2) };
  }

  /** get_page() for each frame: a new mapping ('map', fork) or a pin ('ref'); → pfns no longer live. */
  async getPages(
    pages: ReadonlyArray<{ pfn: number; gen: number }>,
    kind: 'map' | 'ref',
  ): Promise<number[]> {
    if (pages.length === 0) return [];
    const r = await this.call('getPages', MEM, { kind, batch: '', pages: [...pages] });
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
    const r = await this.call('getPages', MEM, { kind, batch, pages: [...pages] });
    return r.r === 'OK' ? r.bad : r.r;
  }

  /** Forget the {mem}:once marks of an operation's batches (its intent record is gone). */
  async onceForget(batches: readonly string[]): Promise<void> {
    if (batches.length > 0) await this.redis.hdel(MEM.once, ...batches);
  }
}
