/**
 * The Lua scripts of libs/model against a real redis-server: the page-table steps, the lease
 * locks with fencing tokens, and frame accounting.
 */
import { describe, expect, it } from 'vitest';
import { MMAP_BASE, PAGE_SIZE } from '@mmlab/protocol';
import { Store, procKeys } from '@mmlab/model';
import { withRedisStore } from './support/redis-store';

let store: Store;
const base = MMAP_BASE / PAGE_SIZE;

withRedisStore(8, (s) => (store = s));

describe('physical memory', () => {
  it('formats once, allocates with a new gen each time, frees LIFO and refuses double frees', async () => {
    expect(await store.memFormat(99)).toBe(8); // idempotent: a second replica does not reformat
    const a = await store.allocPage(null);
    expect(a).toEqual({ pfn: 1, gen: 1 });
    const { freed } = await store.putPages([a!]);
    expect(freed).toEqual([1]);
    const b = await store.allocPage(null);
    expect(b).toEqual({ pfn: 1, gen: 2 }); // reused at once, new generation
    const again = await store.putPages([a!]); // stale gen: a double free
    expect(again).toEqual({ freed: [], bad: [1] });
    expect((await store.memInfo()).free).toBe(7);
  });

  it('runs out of frames with ENOMEM', async () => {
    for (let i = 0; i < 8; i++) expect(await store.allocPage(null)).not.toBeNull();
    expect(await store.allocPage(null)).toBeNull();
  });
});

describe('page tables', () => {
  it('maps the zero page read-only on a read fault, a fresh frame on a write fault', async () => {
    const pid = await store.mmCreate();
    const r = await store.mmap(pid, 4, 'rw', false);
    expect(r).toEqual({ r: 'OK', start: base });
    const z = await store.fault(pid, base, 'read', 'cpu0', null, 'mm-0.t');
    expect(z).toMatchObject({ r: 'ZERO', pte: { pfn: 0, writable: false } });
    const need = await store.fault(pid, base + 1, 'write', 'cpu0', null, 'mm-0.t');
    expect(need.r).toBe('NEED_PAGE');
    const page = (await store.allocPage(null))!;
    const w = await store.fault(pid, base + 1, 'write', 'cpu0', page, 'mm-0.t');
    expect(w).toMatchObject({ r: 'ANON', pte: { pfn: page.pfn, gen: page.gen, writable: true } });
    const wp = await store.fault(pid, base, 'write', 'cpu0', null, 'mm-0.t');
    expect(wp.r).toBe('NEED_WP');
    expect(await store.fault(pid, base + 4, 'read', 'cpu0', null, 'mm-0.t')).toEqual({
      r: 'SIGSEGV',
    });
    expect(await store.fault(pid + 1, base, 'read', 'cpu0', null, 'mm-0.t')).toEqual({
      r: 'ESRCH',
    });
  });

  it('refuses faults while a PT lock is held and a stale lease holder is fenced off', async () => {
    const pid = await store.mmCreate();
    await store.mmap(pid, 4, 'rw', false);
    const pmd = `ptl:${Math.floor(base / 512)}`;
    const a = await store.ptlLock(pid, pmd, 'A', 100);
    expect(a.ok).toBe(true);
    expect(await store.fault(pid, base, 'read', 'cpu0', null, 'mm-0.t')).toEqual({
      r: 'BUSY',
      what: 'ptl',
    });
    expect((await store.ptlLock(pid, pmd, 'B', 100)).ok).toBe(false);
    await new Promise((r) => setTimeout(r, 150)); // A's lease expires
    const b = await store.ptlLock(pid, pmd, 'B', 5000);
    if (!a.ok || !b.ok) throw new Error('locks');
    expect(b.token).toBeGreaterThan(a.token);
    expect(await store.zapPteRange(pid, pmd, `A|${a.token}`, a.token, base, base + 4)).toBeNull();
    expect(await store.zapPteRange(pid, pmd, `B|${b.token}`, b.token, base, base + 4)).toEqual({
      cleared: [],
      cpumask: [],
    });
    expect(await store.leaseRelease(procKeys(pid).ptl(pmd), `A|${a.token}`)).toBe(false);
    expect(await store.leaseRelease(procKeys(pid).ptl(pmd), `B|${b.token}`)).toBe(true);
  });
});

describe('mmap_sem leases (v3.7: readers share it, a writer excludes everyone)', () => {
  it('readers share, a writer waits for live readers only, a reader waits for the writer', async () => {
    const pid = await store.mmCreate();
    expect((await store.mmap(pid, 1, 'rw', false)).r).toBe('OK');
    const r1 = await store.semReadLock(pid, 'mm-0/madvise-1', 60_000);
    const r2 = await store.semReadLock(pid, 'mm-1/madvise-2', 60_000);
    if (r1 === 'ESRCH' || r2 === 'ESRCH' || !r1.ok || !r2.ok) throw new Error('readers refused');
    // a writer (and do_mmap, a writer for one script) waits for them; a fault does not
    expect(await store.semWriteLock(pid, 'mm-0/munmap-3', 60_000)).toEqual({
      ok: false,
      holder: `mm-0/madvise-1|${r1.token}`,
    });
    expect((await store.mmap(pid, 1, 'rw', false)).r).toBe('BUSY');
    expect((await store.fault(pid, base, 'read', 'cpu0', null, 'mm-0.t')).r).toBe('ZERO');
    expect((await store.heldLocks(pid)).filter((l) => l.lock === 'mmap_sem')).toHaveLength(2);
    expect(await store.semReadUnlock(pid, `mm-0/madvise-1|${r1.token}`)).toBe(true);
    expect(await store.semReadUnlock(pid, `mm-1/madvise-2|${r2.token}`)).toBe(true);
    const w = await store.semWriteLock(pid, 'mm-0/munmap-3', 60_000);
    if (w === 'ESRCH' || !w.ok) throw new Error('writer refused');
    expect(await store.semReadLock(pid, 'mm-1/madvise-4', 60_000)).toEqual({
      ok: false,
      holder: `mm-0/munmap-3|${w.token}`,
    });
    expect(await store.semWriteUnlock(pid, `mm-0/munmap-3|${w.token}`)).toBe(true);
  });

  it('an expired reader neither blocks a writer nor renews', async () => {
    const pid = await store.mmCreate();
    const r = await store.semReadLock(pid, 'mm-0/madvise-1', 50);
    if (r === 'ESRCH' || !r.ok) throw new Error('reader refused');
    await new Promise((res) => setTimeout(res, 120));
    expect(await store.semReadRenew(pid, `mm-0/madvise-1|${r.token}`, 60_000)).toBe(false);
    const w = await store.semWriteLock(pid, 'mm-0/munmap-2', 60_000);
    expect(w !== 'ESRCH' && w.ok).toBe(true);
    expect(await store.semReadUnlock(pid, `mm-0/madvise-1|${r.token}`)).toBe(false);
  });
});

describe('mmap_sem write-held by the faulting caller itself (ib_umem_get), and an exiting mm', () => {
  it("the holder's own fault steps pass the write-held check; everyone else's are BUSY", async () => {
    const pid = await store.mmCreate();
    await store.mmap(pid, 2, 'rw', false);
    expect((await store.fault(pid, base, 'read', 'cpu0', null, 'mm-0.t')).r).toBe('ZERO');
    const w = await store.semWriteLock(pid, 'mm-0/gup#1', 60_000);
    if (w === 'ESRCH' || !w.ok) throw new Error('writer refused');
    const mine = `mm-0/gup#1|${w.token}`;
    const page = (await store.allocPage(null))!;
    expect(await store.fault(pid, base + 1, 'write', 'cpu0', page, 'mm-0.t')).toEqual({
      r: 'BUSY',
      what: 'mmap_sem',
    });
    expect(
      await store.fault(pid, base + 1, 'write', 'hca0', page, 'mm-0.t', 'mm-0/gup#9|1'),
    ).toEqual({
      r: 'BUSY',
      what: 'mmap_sem',
    });
    expect((await store.fault(pid, base + 1, 'write', 'hca0', page, 'mm-0.t', mine)).r).toBe(
      'ANON',
    );
    const wp = await store.fault(pid, base, 'write', 'hca0', null, 'mm-0.t', mine);
    if (wp.r !== 'NEED_WP') throw new Error(`expected NEED_WP, got ${wp.r}`);
    const lock = `ptl:${Math.floor(base / 512)}`;
    const copy = (sem?: string) =>
      store.wpCopyLock(
        pid,
        base,
        wp.pte,
        wp.seq,
        'mm-0/fault#2',
        5000,
        lock,
        'hca0',
        'mm-0.t',
        sem,
      );
    expect(await copy()).toEqual({ r: 'BUSY', what: 'mmap_sem' });
    expect(await store.wpReuse(pid, base, wp.pte, wp.seq, 'hca0')).toBe('BUSY');
    expect((await copy(mine)).r).toBe('OK');
    // the charge checks the lease too: a caller that lost it is refused, nothing charged
    expect(await store.pinnedVmCharge(pid, 1, 10, 'mm-0/gup#9|1')).toMatchObject({
      ok: false,
      code: 'ESTALE',
    });
    expect(await store.pinnedVmCharge(pid, 1, 10, mine)).toEqual({ ok: true, pinnedVm: 1 });
  });

  it('exit: once exiting, faults, mmap and mmap_sem refuse (ESRCH); it ends only with no PTE left', async () => {
    const pid = await store.mmCreate();
    await store.mmap(pid, 2, 'rw', false);
    expect((await store.fault(pid, base, 'read', 'cpu0', null, 'mm-0.t')).r).toBe('ZERO');
    const r = await store.semReadLock(pid, 'mm-0/madvise#1', 60_000);
    if (r === 'ESRCH' || !r.ok) throw new Error('reader refused');
    // no mmap_sem asked: a reader holding it does not hold the exit off
    expect(await store.mmExitBegin(pid)).toBe('began');
    expect(await store.mmExitBegin(pid)).toBe('again');
    expect(await store.fault(pid, base + 1, 'read', 'cpu0', null, 'mm-0.t')).toEqual({
      r: 'ESRCH',
    });
    expect((await store.mmap(pid, 1, 'rw', false)).r).toBe('ESRCH');
    expect(await store.semWriteLock(pid, 'mm-1/munmap#2', 60_000)).toBe('ESRCH');
    expect(await store.semReadLock(pid, 'mm-1/madvise#3', 60_000)).toBe('ESRCH');
    expect(await store.mmExit(pid)).toEqual({ ptes: 1 }); // the zero-page PTE is still there
    expect((await store.mmState(pid)).state).toBe('exiting');
    const lock = `ptl:${Math.floor(base / 512)}`;
    const l = await store.ptlLock(pid, lock, 'mm-0/exit#4', 5000);
    if (!l.ok) throw new Error('ptl refused');
    await store.zapPteRange(pid, lock, `mm-0/exit#4|${l.token}`, l.token, base, base + 512);
    expect(await store.mmExit(pid)).toBe('ended');
    expect(await store.mmExit(pid)).toBe('dead');
    expect(await store.vmas(pid)).toEqual([]);
    expect(await store.pmds(pid)).toEqual([]);
    expect(await store.mmExitBegin(pid)).toBe('ESRCH');
    expect(await store.mmExitBegin(pid + 1)).toBe('ESRCH'); // never was
    expect(await store.semReadUnlock(pid, `mm-0/madvise#1|${r.token}`)).toBe(true);
  });
});
