/**
 * The packed page tables (libs/model/src/mm/lua.ts) against a real redis-server: the PTEs of a
 * page-table page live in a few packed values (PTES_PER_FIELD each), so every write must leave its
 * neighbours alone, the page's first and last entries must round-trip, every w state (3: cleared by a COW in flight
 * included) and pfn/gen at their maxima must survive, a value that does not fit must be refused
 * with nothing written, and a stored field that loses its last PTE must go.
 */
import { describe, expect, it } from 'vitest';
import { MMAP_BASE, MmlabError, PAGE_SIZE, PTRS_PER_PTE } from '@mmlab/protocol';
import { type Pte, Store, procKeys, pteLockName } from '@mmlab/model';
import { PTES_PER_FIELD, PTE_BYTES, PTE_FIELD_MAX } from '@mmlab/model/mm/lua';
import { withRedisStore } from './support/redis-store';

let store: Store;
const base = MMAP_BASE / PAGE_SIZE;
/** a page-table page wholly inside a mapping of 3 * 512 pages at base, its neighbours mapped too */
const P = Math.ceil((base + 1) / PTRS_PER_PTE);
const first = P * PTRS_PER_PTE;
const last = first + PTRS_PER_PTE - 1;
const MAX = PTE_FIELD_MAX;

const ro = (pfn: number, gen: number): Pte => ({ pfn, gen, writable: false });
const rw = (pfn: number, gen: number): Pte => ({ pfn, gen, writable: true });

withRedisStore(8, (s) => (store = s));

/** A process with one rw mapping of 3 page-table pages' worth at base. */
async function space(): Promise<number> {
  const pid = await store.mmCreate();
  expect(await store.mmap(pid, 3 * PTRS_PER_PTE, 'rw', false)).toEqual({ r: 'OK', start: base });
  return pid;
}

/** Run f under the split PT lock of page-table page pmd, as the mm does, then unlock. */
async function underPtl<T>(
  pid: number,
  pmd: number,
  f: (lock: string, value: string, token: number) => Promise<T>,
): Promise<T> {
  const lock = pteLockName(pmd);
  const l = await store.ptlLock(pid, lock, 'mm-0/test', 60_000);
  if (!l.ok) throw new Error(`${lock} not granted`);
  const value = `mm-0/test|${l.token}`;
  try {
    return await f(lock, value, l.token);
  } finally {
    await store.leaseRelease(procKeys(pid).ptl(lock), value);
  }
}

describe('packed page tables', () => {
  it('keeps the first and the last PTE of a page-table page, and their neighbours, apart', async () => {
    const pid = await space();
    const a = (await store.allocPage(null))!;
    const b = (await store.allocPage(null))!;
    expect(await store.fault(pid, first, 'write', 'cpu0', a, 'mm-0.t')).toMatchObject({
      r: 'ANON',
    });
    expect(await store.fault(pid, last, 'write', 'cpu0', b, 'mm-0.t')).toMatchObject({ r: 'ANON' });
    expect([...(await store.pageTable(pid))]).toEqual([
      [first, rw(a.pfn, a.gen)],
      [last, rw(b.pfn, b.gen)],
    ]);
    // the entries between them, and the neighbouring pages' edges, are pte_none
    for (const vpn of [first - 1, first + 1, last - 1, last + 1])
      expect(await store.walk(pid, vpn, 'cpu0')).toBeNull();
    expect(await store.walk(pid, first, 'cpu0')).toEqual(rw(a.pfn, a.gen));
    expect(await store.walk(pid, last, 'cpu0')).toEqual(rw(b.pfn, b.gen));

    // the neighbours get PTEs of their own (zero page, read-only), then the two ends go
    for (const vpn of [first + 1, last - 1, first - 1, last + 1])
      expect(await store.fault(pid, vpn, 'read', 'cpu0', null, 'mm-0.t')).toMatchObject({
        r: 'ZERO',
      });
    const zapped = await underPtl(pid, P, (lock, value, token) =>
      store.zapPteRange(pid, lock, value, token, first, first + 1),
    );
    expect(zapped?.cleared).toEqual([{ vpn: first, ...rw(a.pfn, a.gen) }]);
    const zapped2 = await underPtl(pid, P, (lock, value, token) =>
      store.zapPteRange(pid, lock, value, token, last, last + 1),
    );
    expect(zapped2?.cleared).toEqual([{ vpn: last, ...rw(b.pfn, b.gen) }]);
    expect([...(await store.pageTable(pid))]).toEqual([
      [first - 1, ro(0, 1)],
      [first + 1, ro(0, 1)],
      [last - 1, ro(0, 1)],
      [last + 1, ro(0, 1)],
    ]);
  });

  it('round-trips every w state, w = 3 (cleared by a COW in flight) included', async () => {
    const pid = await space();
    const states: Pte[] = [
      ro(5, 7),
      rw(5, 7),
      { pfn: 5, gen: 7, writable: false, protnone: true },
      { pfn: 5, gen: 7, writable: false, cowCleared: true },
    ];
    for (const [i, p] of states.entries()) await store.pokePte(pid, first + i, p);
    expect([...(await store.pageTable(pid)).values()]).toEqual(states);
    // a walker sees PROT_NONE as the mm stores it, and a COW-cleared PTE as pte_none
    expect(await store.walk(pid, first + 2, 'cpu0')).toEqual(states[2]);
    expect(await store.walk(pid, first + 3, 'cpu0')).toBeNull();

    // the real path: do_wp_page's first half clears the zero page's PTE (w = 3), the COW dies
    // (its lease is dropped), the next fault puts the old read-only PTE back
    const vpn = last;
    const z = await store.fault(pid, vpn, 'read', 'cpu0', null, 'mm-0.t');
    if (z.r !== 'ZERO') throw new Error(z.r);
    const lock = pteLockName(P);
    const c = await store.wpCopyLock(
      pid,
      vpn,
      z.pte,
      z.seq,
      'mm-0/cow',
      60_000,
      lock,
      'cpu0',
      'mm-0.t',
    );
    if (c.r !== 'OK') throw new Error(c.r);
    expect((await store.pageTable(pid)).get(vpn)).toEqual({ ...ro(0, 1), cowCleared: true });
    expect(await store.walk(pid, vpn, 'cpu0')).toBeNull();
    expect(await store.leaseRelease(procKeys(pid).ptl(lock), `mm-0/cow|${c.token}`)).toBe(true);
    expect(await store.fault(pid, vpn, 'read', 'cpu0', null, 'mm-0.t')).toMatchObject({
      r: 'SPURIOUS',
      pte: ro(0, 1),
      undone: true,
    });
    expect((await store.pageTable(pid)).get(vpn)).toEqual(ro(0, 1));
  });

  it('holds pfn and gen at their maxima, and refuses one past them with nothing written', async () => {
    const pid = await space();
    await store.pokePte(pid, first, rw(MAX, MAX));
    await store.pokePte(pid, last, { pfn: MAX, gen: 0, writable: false, cowCleared: true });
    await store.pokePte(pid, first + 1, ro(0, MAX));
    const before = [...(await store.pageTable(pid))];
    expect(before).toEqual([
      [first, rw(MAX, MAX)],
      [first + 1, ro(0, MAX)],
      [last, { pfn: MAX, gen: 0, writable: false, cowCleared: true }],
    ]);
    expect(await store.walk(pid, first, 'cpu0')).toEqual(rw(MAX, MAX));

    const code = (p: Promise<unknown>) =>
      p.then(
        () => 'resolved',
        (e: unknown) => (e instanceof MmlabError ? e.code : String(e)),
      );
    const over = { pfn: MAX + 1, gen: 1 };
    expect(await code(store.fault(pid, first + 2, 'write', 'cpu0', over, 'mm-0.t'))).toBe('EINVAL');
    expect(
      await code(store.fault(pid, first + 2, 'write', 'cpu0', { pfn: 1, gen: MAX + 1 }, 'mm-0.t')),
    ).toBe('EINVAL');
    expect(await code(store.pokePte(pid, first + 2, rw(1, MAX + 1)))).toBe('EINVAL');
    await underPtl(pid, P, async (lock, value, token) => {
      const set = store.setPteUnlock(pid, lock, value, token, first + 2, rw(MAX + 1, 1), 'mm-0.t');
      expect(await code(set)).toBe('EINVAL');
      // the lock is still held (the refused write did nothing), and a fitting write passes
      expect(await store.ptlState(pid, lock)).toMatchObject({ locked: true });
      expect(
        await store.setPteUnlock(pid, lock, value, token, first + 2, rw(MAX, MAX), 'mm-0.t'),
      ).toBe('OK');
    });
    expect([...(await store.pageTable(pid))]).toEqual([
      ...before.slice(0, 2),
      [first + 2, rw(MAX, MAX)],
      before[2],
    ]);
  });

  it('stores a sparse address space by the span of each field, and drops a field left empty', async () => {
    const pid = await space();
    const k = procKeys(pid);
    const field = (vpn: number) => String(Math.floor(vpn / PTES_PER_FIELD));
    const far = first + 2 * PTRS_PER_PTE + 7;
    await store.pokePte(pid, last, ro(3, 4));
    await store.pokePte(pid, far, ro(3, 4));
    // one PTE: its field's header and that one entry, wherever it lies in the field
    expect(await store.redis.hstrlen(k.pte, field(last))).toBe(2 + PTE_BYTES);
    expect(await store.redis.hstrlen(k.pte, field(far))).toBe(2 + PTE_BYTES);
    // a second PTE of the same field, PTES_PER_FIELD - 4 before it: the span between them
    const near = last - (PTES_PER_FIELD - 4);
    await store.pokePte(pid, near, ro(3, 4));
    expect(field(near)).toBe(field(last));
    expect(await store.redis.hstrlen(k.pte, field(last))).toBe(
      2 + (PTES_PER_FIELD - 3) * PTE_BYTES,
    );
    // the last entry cleared: trimmed back to the one left
    await store.pokePte(pid, last, null);
    expect(await store.redis.hstrlen(k.pte, field(near))).toBe(2 + PTE_BYTES);
    expect([...(await store.pageTable(pid)).keys()]).toEqual([near, far]);
    // a field whose PTEs are all zapped is no field any more
    const z = await underPtl(pid, P + 2, (lock, value, token) =>
      store.zapPteRange(pid, lock, value, token, far - 7, far - 7 + PTRS_PER_PTE),
    );
    expect(z?.cleared).toEqual([{ vpn: far, ...ro(3, 4) }]);
    expect(await store.redis.hkeys(k.pte)).toEqual([field(near)]);
  });

  it('moves, write-protects and copies the PTEs of a range across page-table pages', async () => {
    const pid = await space();
    // 12 PTEs at the end of page P, moved by 6: half of them cross into page P + 1
    for (let i = 0; i < 12; i++) await store.pokePte(pid, last - 11 + i, rw(100 + i, 1));
    const moved = await underPtl(pid, P, (lock, value, token) =>
      store.movePtes(pid, lock, value, token, last - 11, last + 1, 6),
    );
    expect(moved).toMatchObject({ moved: 12 });
    const pt = await store.pageTable(pid);
    expect([...pt.keys()]).toEqual(Array.from({ length: 12 }, (_, i) => last - 5 + i));
    expect([...pt.values()]).toEqual(Array.from({ length: 12 }, (_, i) => rw(100 + i, 1)));
    // the destination's page-table pages are in :pmds (pokePte left the source's out)
    expect(await store.pmds(pid)).toEqual([P, P + 1]);

    const changed = await underPtl(pid, P + 1, (lock, value, token) =>
      store.changePteRange(pid, lock, value, token, last + 1, last + 7, 'r'),
    );
    expect(changed).toMatchObject({ changed: 6, downgraded: 6 });
    const after = await store.pageTable(pid);
    for (let i = 0; i < 12; i++)
      expect(after.get(last - 5 + i)).toEqual(i < 6 ? rw(100 + i, 1) : ro(100 + i, 1));
  });

  it("writes a forked child's PTEs across page-table pages, each page in :pmds", async () => {
    const parent = await space();
    const child = 1000 + parent;
    const { mmapNext } = await store.mmState(parent);
    expect(await store.forkChild(child, await store.vmas(parent), mmapNext, 'f1')).toBe(true);
    const ptes = [last - 1, last, last + 1].map((vpn, i) => ({ vpn, pte: ro(10 + i, 2) }));
    expect(await store.setPtes(child, 'f1', ptes)).toBe(true);
    expect([...(await store.pageTable(child))]).toEqual(ptes.map((p) => [p.vpn, p.pte]));
    expect(await store.pmds(child)).toEqual([P, P + 1]);
    // a PTE that does not fit: refused, nothing written
    await expect(store.setPtes(child, 'f1', [{ vpn: first, pte: ro(MAX + 1, 1) }])).rejects.toThrow(
      /EINVAL|fit/,
    );
    expect(await store.pageTable(child)).toHaveProperty('size', 3);
  });

  it('reports a stored field that breaks the layout, and reads the others', async () => {
    const pid = await space();
    const bad = Math.floor((first + PTRS_PER_PTE) / PTES_PER_FIELD);
    await store.pokePte(pid, first, ro(3, 4));
    await store.redis.hset(procKeys(pid).pte, String(bad), 'not a field');
    expect(await store.pageTableRaw(pid)).toEqual({
      [String(first)]: '3:4:0',
      [`field:${bad}`]: 'corrupt page-table field',
    });
    await expect(store.pageTable(pid)).rejects.toThrow(/corrupt page-table field/);
    await expect(store.walk(pid, first + PTRS_PER_PTE, 'cpu0')).rejects.toThrow(
      /corrupt page-table field/,
    );
    expect(await store.walk(pid, first, 'cpu0')).toEqual(ro(3, 4));
  });
});
