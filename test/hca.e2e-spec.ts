/**
 * The RDMA HCA with on-demand paging against real services: two mm replicas, two CPUs and
 * hca0 (invalidation latency 50 ms) as separate processes, a real nats-server and redis-server.
 * ODP MRs fault pages in through mm and follow its invalidations; pinned MRs pin at
 * registration, the pre-ODP way.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type EventOf,
  PAGE_SIZE,
  type Req,
  type Res,
  type RpcName,
  type TraceKind,
} from '@mmlab/protocol';
import type { Store } from '@mmlab/model';
import type { RpcClient } from '@mmlab/runtime';
import { type LocalLab } from '@mmlab/runner';
import {
  type TestLab,
  type TraceLog,
  codeOf,
  startTestLab,
  violatedInvariants,
} from '@mmlab/testing';

const HCA = 'hca0';
const LATENCY_MS = 50;

describe('hca0: ODP and pinned memory regions against real services', () => {
  let t: TestLab | undefined;
  let rpc: RpcClient;
  let store: Store;
  let trace: TraceLog;

  beforeAll(async () => {
    t = await startTestLab(
      {
        mode: 'patched',
        frames: 64,
        cpus: 2,
        mmReplicas: 2,
        subscribers: [{ name: HCA, kind: 'hca', invalidateLatencyMs: LATENCY_MS }],
      },
      { rpcTimeoutMs: 20_000 },
    );
    ({ rpc, store, trace } = t);
  });
  afterAll(async () => {
    await t?.stop();
  });

  const hca = <N extends RpcName>(name: N, req: Req<N>): Promise<Res<N>> =>
    rpc.call(name, req, { id: HCA });
  const cpuRead = async (cpu: number, pid: number, addr: number) =>
    (await rpc.call('cpuAccess', { pid, addr, op: 'read' }, { id: cpu })).value;
  const cpuWrite = (cpu: number, pid: number, addr: number, value: number) =>
    rpc.call('cpuAccess', { pid, addr, op: 'write', value }, { id: cpu });
  const space = async (pages: number, prot: 'none' | 'r' | 'rw' = 'rw') => {
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages, prot });
    return { pid, addr, page: (i: number) => addr + i * PAGE_SIZE };
  };
  const events = <K extends TraceKind>(kind: K, pred: (e: EventOf<K>) => boolean = () => true) =>
    trace.events.filter((e): e is EventOf<K> => e.kind === kind && pred(e as EventOf<K>));

  it('ODP MR: network page faults; values written by the device are seen by a CPU and back', async () => {
    const { pid, page } = await space(8);
    const { mr } = await hca('hcaRegMr', {
      pid,
      addr: page(0),
      pages: 8,
      odp: true,
      access: ['read', 'write'],
    });
    expect(await store.mnSubscribers(pid)).toEqual([HCA]);
    expect(events('smap.set', (e) => e.pid === pid)).toHaveLength(0); // nothing mapped yet

    const w = await hca('hcaRdmaWrite', { mr, addr: page(2), value: 42 });
    expect(w).toMatchObject({ npf: 1, stale: false });
    expect(await cpuRead(0, pid, page(2))).toBe(42);

    await cpuWrite(1, pid, page(3), 7);
    const r = await hca('hcaRdmaRead', { mr, addr: page(3) });
    expect(r).toMatchObject({ value: 7, npf: 1, stale: false });
    expect(r.pfn).toBe((await store.pageTable(pid)).get(page(3) / PAGE_SIZE)!.pfn);
    expect(await hca('hcaRdmaRead', { mr, addr: page(2) })).toMatchObject({ value: 42, npf: 0 });

    await trace.next(
      (e) =>
        e.kind === 'access' &&
        e.agent === HCA &&
        e.pid === pid &&
        e.rw === 'read' &&
        e.value === 42,
    );
    expect(events('npf.end', (e) => e.pid === pid).map((e) => [e.addr, e.result])).toEqual([
      [page(2), 'ok'],
      [page(3), 'ok'],
    ]);
    // Both faulted for write: a writable MR's network faults always do (3.19
    // pagefault_single_data_segment; no read downgrade before v5.0, and then only for prefetch).
    expect(events('npf.begin', (e) => e.pid === pid).map((e) => e.write)).toEqual([true, true]);
    expect(events('smap.set', (e) => e.pid === pid).map((e) => [e.addr, e.writable])).toEqual([
      [page(2), true],
      [page(3), true],
    ]);
  });

  it('after fork, an RDMA READ through a writable ODP MR breaks COW in the parent', async () => {
    const { pid, page } = await space(2);
    await cpuWrite(0, pid, page(0), 1);
    const { mr } = await hca('hcaRegMr', {
      pid,
      addr: page(0),
      pages: 2,
      odp: true,
      access: ['read', 'write'],
    });
    const { pid: child } = await rpc.call('fork', { pid });
    const shared = (await store.pageTable(child)).get(page(0) / PAGE_SIZE)!;
    expect((await store.pageTable(pid)).get(page(0) / PAGE_SIZE)!.pfn).toBe(shared.pfn);

    const r = await hca('hcaRdmaRead', { mr, addr: page(0) });
    expect(r).toMatchObject({ value: 1, npf: 1, stale: false });
    const parent = (await store.pageTable(pid)).get(page(0) / PAGE_SIZE)!;
    expect(parent.pfn, 'the read broke COW: the parent has a new frame').not.toBe(shared.pfn);
    expect(parent.writable).toBe(true);
    expect(r.pfn, "the device maps the parent's new frame").toBe(parent.pfn);
    expect((await store.pageTable(child)).get(page(0) / PAGE_SIZE)!.pfn).toBe(shared.pfn);
    // the device's later write goes to the parent's page, never the child's
    await hca('hcaRdmaWrite', { mr, addr: page(0), value: 2 });
    expect(await cpuRead(1, pid, page(0))).toBe(2);
    expect(await cpuRead(1, child, page(0))).toBe(1);
    await rpc.call('exit', { pid: child });
    await hca('hcaDeregMr', { mr });
  });

  it("a read-only ODP MR follows the CPU's copy-on-write of the zero page (range start/end, v3.7)", async () => {
    const { pid, page } = await space(2);
    const { mr } = await hca('hcaRegMr', {
      pid,
      addr: page(0),
      pages: 2,
      odp: true,
      access: ['read'],
    });
    expect(await hca('hcaRdmaRead', { mr, addr: page(0) })).toMatchObject({
      value: 0,
      pfn: 0,
      npf: 1,
    });
    // do_wp_page copies the zero page inside invalidate_range_start/end (6bdb913f, v3.7)
    await cpuWrite(0, pid, page(0), 5);
    await trace.next(
      (e) =>
        e.kind === 'mn.done' &&
        e.agent === HCA &&
        e.pid === pid &&
        e.callback === 'invalidate_range_end',
    );
    const r = await hca('hcaRdmaRead', { mr, addr: page(0) });
    expect(r).toMatchObject({ value: 5, npf: 1, stale: false });
    expect(r.pfn).not.toBe(0);
  });

  it('munmap: the device drops its entries (and takes its time) before mm frees the frames', async () => {
    const { pid, page } = await space(4);
    const { mr } = await hca('hcaRegMr', {
      pid,
      addr: page(0),
      pages: 4,
      odp: true,
      access: ['read', 'write'],
    });
    for (let i = 0; i < 4; i++) await hca('hcaRdmaWrite', { mr, addr: page(i), value: 100 + i });
    const t0 = Date.now();
    await rpc.call('munmap', { pid, addr: page(0), pages: 4 });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(LATENCY_MS - 5);

    const start = await trace.next<EventOf<'mn.recv'>>(
      (e) =>
        e.kind === 'mn.recv' &&
        e.agent === HCA &&
        e.pid === pid &&
        e.callback === 'invalidate_range_start',
    );
    expect([start.start, start.end]).toEqual([page(0), page(4)]);
    await trace.next(
      (e) =>
        e.kind === 'mn.recv' &&
        e.agent === HCA &&
        e.pid === pid &&
        e.callback === 'invalidate_range_end',
    );
    await t!.settled();
    const clears = events('smap.clear', (e) => e.pid === pid && e.agent === HCA);
    expect(clears.map((e) => e.addr)).toEqual([page(0), page(1), page(2), page(3)]);
    for (const c of clears) {
      const free = events('frame.free', (f) => f.pfn === c.pfn && f.gen === c.gen);
      expect(free, `pfn ${c.pfn} freed once`).toHaveLength(1);
      expect(c.ts, `pfn ${c.pfn} cleared before it is freed`).toBeLessThan(free[0].ts);
    }
    expect(events('mn.ptl_held')).toHaveLength(0);
    expect(await codeOf(hca('hcaRdmaRead', { mr, addr: page(0) }))).toBe('EFAULT');
  });

  it('EFAULT for every access the mapping refuses; EPERM for one the MR forbids', async () => {
    const none = await space(1, 'none');
    const odpNone = await hca('hcaRegMr', {
      pid: none.pid,
      addr: none.addr,
      pages: 1,
      odp: true,
      access: ['read'],
    });
    expect(await codeOf(hca('hcaRdmaRead', { mr: odpNone.mr, addr: none.addr }))).toBe('EFAULT');
    expect(
      await codeOf(
        hca('hcaRegMr', { pid: none.pid, addr: none.addr, pages: 1, odp: false, access: ['read'] }),
      ),
    ).toBe('EFAULT');

    const rw = await space(1);
    const readOnlyMr = await hca('hcaRegMr', {
      pid: rw.pid,
      addr: rw.addr,
      pages: 1,
      odp: true,
      access: ['read'],
    });
    expect(await codeOf(hca('hcaRdmaWrite', { mr: readOnlyMr.mr, addr: rw.addr, value: 1 }))).toBe(
      'EPERM',
    );

    const r = await space(1, 'r');
    const writableMr = await hca('hcaRegMr', {
      pid: r.pid,
      addr: r.addr,
      pages: 1,
      odp: true,
      access: ['read', 'write'],
    });
    expect(await codeOf(hca('hcaRdmaWrite', { mr: writableMr.mr, addr: r.addr, value: 1 }))).toBe(
      'EFAULT',
    );
    // a writable MR's read faults for write: the read-only VMA refuses it as well
    expect(await codeOf(hca('hcaRdmaRead', { mr: writableMr.mr, addr: r.addr }))).toBe('EFAULT');
    const readMr = await hca('hcaRegMr', {
      pid: r.pid,
      addr: r.addr,
      pages: 1,
      odp: true,
      access: ['read'],
    });
    expect(await hca('hcaRdmaRead', { mr: readMr.mr, addr: r.addr })).toMatchObject({ value: 0 });
    expect(await codeOf(hca('hcaRdmaRead', { mr: readMr.mr, addr: r.addr + 8 }))).toBe('EINVAL');
    expect(await codeOf(hca('hcaRdmaRead', { mr: readMr.mr, addr: r.addr + PAGE_SIZE }))).toBe(
      'EINVAL',
    );
  });

  it('prefetch maps a range ahead of use (write: writable; read: what a read fault gives)', async () => {
    const { pid, page } = await space(8);
    const { mr } = await hca('hcaRegMr', {
      pid,
      addr: page(0),
      pages: 8,
      odp: true,
      access: ['read', 'write'],
    });
    expect(await hca('hcaPrefetch', { mr, addr: page(0), pages: 4, write: true })).toEqual({
      mapped: 4,
    });
    expect(await hca('hcaRdmaWrite', { mr, addr: page(1), value: 9 })).toMatchObject({ npf: 0 });
    expect(await hca('hcaPrefetch', { mr, addr: page(4), pages: 4 })).toEqual({ mapped: 4 });
    expect(await hca('hcaRdmaRead', { mr, addr: page(5) })).toMatchObject({
      value: 0,
      pfn: 0,
      npf: 0,
    });
    expect(await hca('hcaRdmaWrite', { mr, addr: page(5), value: 3 })).toMatchObject({ npf: 1 });
    expect(await cpuRead(1, pid, page(5))).toBe(3);
  });

  it('pinned MR: pinned and programmed at registration, no notifier, frames held until dereg', async () => {
    const { pid, page } = await space(4);
    await cpuWrite(0, pid, page(0), 11);
    const { mr } = await hca('hcaRegMr', {
      pid,
      addr: page(0),
      pages: 4,
      odp: false,
      access: ['read', 'write'],
    });
    expect(await store.mnSubscribers(pid)).toEqual([]);
    await t!.settled();
    const sets = events('smap.set', (e) => e.pid === pid);
    expect(sets.map((e) => e.addr)).toEqual([page(0), page(1), page(2), page(3)]);
    expect(
      events('frame.pin', (e) => e.agent === HCA && sets.some((s) => s.pfn === e.pfn)),
    ).toHaveLength(4);
    expect(await hca('hcaRdmaRead', { mr, addr: page(0) })).toMatchObject({ value: 11, npf: 0 });
    await hca('hcaRdmaWrite', { mr, addr: page(2), value: 12 });
    expect(await cpuRead(1, pid, page(2))).toBe(12);

    // munmap sends hca0 nothing (not a subscriber) and cannot free the pinned frames.
    await rpc.call('munmap', { pid, addr: page(0), pages: 4 });
    await t!.settled();
    expect(events('mn.recv', (e) => e.pid === pid)).toHaveLength(0);
    expect(
      events('frame.free', (e) => sets.some((s) => s.pfn === e.pfn && s.gen === e.gen)),
    ).toHaveLength(0);

    expect(await hca('hcaDeregMr', { mr })).toEqual({ dereg: true });
    await t!.settled();
    for (const s of sets) {
      const clear = events('smap.clear', (e) => e.pid === pid && e.addr === s.addr);
      const free = events('frame.free', (e) => e.pfn === s.pfn && e.gen === s.gen);
      expect(clear).toHaveLength(1);
      expect(free, `pfn ${s.pfn} freed by the unpin`).toHaveLength(1);
      expect(clear[0].ts).toBeLessThan(free[0].ts);
    }
  });

  it('dereg: the MR is gone, its entries cleared; the last ODP MR of a process unregisters', async () => {
    const { pid, page } = await space(2);
    const a = (await hca('hcaRegMr', { pid, addr: page(0), pages: 2, odp: true, access: ['read'] }))
      .mr;
    const b = (await hca('hcaRegMr', { pid, addr: page(0), pages: 1, odp: true, access: ['read'] }))
      .mr;
    await hca('hcaRdmaRead', { mr: a, addr: page(1) });
    await hca('hcaRdmaRead', { mr: b, addr: page(0) });
    expect(await hca('hcaDeregMr', { mr: a })).toEqual({ dereg: true });
    expect(await store.mnSubscribers(pid)).toEqual([HCA]);
    expect(await codeOf(hca('hcaRdmaRead', { mr: a, addr: page(1) }))).toBe('EINVAL');
    expect(await hca('hcaRdmaRead', { mr: b, addr: page(0) })).toMatchObject({ npf: 0 });
    expect(await hca('hcaDeregMr', { mr: b })).toEqual({ dereg: true });
    expect(await store.mnSubscribers(pid)).toEqual([]);
    expect(await hca('hcaDeregMr', { mr: b })).toEqual({ dereg: false });
    await t!.settled();
    expect(
      events('smap.clear', (e) => e.pid === pid)
        .map((e) => e.addr)
        .sort(),
    ).toEqual([page(0), page(1)]);
    // mm released us on the way out; a new ODP MR registers again and faults again
    const c = (await hca('hcaRegMr', { pid, addr: page(0), pages: 2, odp: true, access: ['read'] }))
      .mr;
    expect(await store.mnSubscribers(pid)).toEqual([HCA]);
    expect(await hca('hcaRdmaRead', { mr: c, addr: page(1) })).toMatchObject({ npf: 1 });
    await hca('hcaDeregMr', { mr: c });
  });

  it('exit: release zaps the ODP MRs before the frames go; later DMA on them is EFAULT', async () => {
    const { pid, page } = await space(2);
    const { mr } = await hca('hcaRegMr', {
      pid,
      addr: page(0),
      pages: 2,
      odp: true,
      access: ['read', 'write'],
    });
    await hca('hcaRdmaWrite', { mr, addr: page(0), value: 1 });
    await hca('hcaRdmaWrite', { mr, addr: page(1), value: 2 });
    await rpc.call('exit', { pid });
    await t!.settled();
    expect(events('mn.recv', (e) => e.pid === pid).map((e) => e.callback)).toEqual(['release']);
    const clears = events('smap.clear', (e) => e.pid === pid);
    expect(clears).toHaveLength(2);
    for (const c of clears)
      expect(c.ts).toBeLessThan(
        events('frame.free', (f) => f.pfn === c.pfn && f.gen === c.gen)[0].ts,
      );
    expect(await codeOf(hca('hcaRdmaRead', { mr, addr: page(0) }))).toBe('EFAULT');
    expect(await hca('hcaDeregMr', { mr })).toEqual({ dereg: true });
  });

  it('a pinned MR past memlockPages fails with ENOMEM before it maps a page; an ODP MR of the same range reads and writes every page, on fewer frames than pages', async () => {
    const pages = 80; // > 64 frames, > memlockPages (default 64 / 4 = 16)
    const { pid, page } = await space(pages);
    const free = (await rpc.call('meminfo', {})).free;
    expect(
      await codeOf(
        hca('hcaRegMr', { pid, addr: page(0), pages, odp: false, access: ['read', 'write'] }),
      ),
    ).toBe('ENOMEM');
    expect((await store.pageTable(pid)).size, 'no page was faulted in').toBe(0);
    expect((await rpc.call('meminfo', {})).free).toBe(free);
    expect(await store.pinnedVm(pid)).toBe(0);

    const odp = await hca('hcaRegMr', {
      pid,
      addr: page(0),
      pages,
      odp: true,
      access: ['read', 'write'],
    });
    const BATCH = 16; // the device's working set stays under the frames: madvise lets it move on
    for (let b = 0; b < pages; b += BATCH) {
      for (let i = b; i < b + BATCH; i++)
        await hca('hcaRdmaWrite', { mr: odp.mr, addr: page(i), value: 1000 + i });
      for (let i = b; i < b + BATCH; i++)
        expect((await hca('hcaRdmaRead', { mr: odp.mr, addr: page(i) })).value).toBe(1000 + i);
      await rpc.call('madvise', { pid, addr: page(b), pages: BATCH, advice: 'dontneed' });
    }
    expect(await hca('hcaDeregMr', { mr: odp.mr })).toEqual({ dereg: true });
    await rpc.call('munmap', { pid, addr: page(0), pages });
  });

  it('pinned_vm: pinned registrations add up against memlockPages and dereg gives back; a read-only pinned MR breaks COW at registration', async () => {
    const { pid, page } = await space(12);
    await cpuWrite(0, pid, page(0), 5);
    const { pid: child } = await rpc.call('fork', { pid });
    const vpn0 = page(0) / PAGE_SIZE;
    const shared = (await store.pageTable(child)).get(vpn0)!.pfn;
    expect((await store.pageTable(pid)).get(vpn0)!.pfn).toBe(shared);

    // ib_umem_get faults for write even for a read-only MR: the parent gets its own page
    const a = await hca('hcaRegMr', {
      pid,
      addr: page(0),
      pages: 10,
      odp: false,
      access: ['read'],
    });
    const mine = (await store.pageTable(pid)).get(vpn0)!;
    expect(mine.pfn, 'COW broken at registration').not.toBe(shared);
    expect((await store.pageTable(child)).get(vpn0)!.pfn).toBe(shared);
    expect(await hca('hcaRdmaRead', { mr: a.mr, addr: page(0) })).toMatchObject({
      value: 5,
      pfn: mine.pfn,
    });
    await cpuWrite(1, pid, page(0), 6); // the parent's page is the device's: no copy now
    expect(await hca('hcaRdmaRead', { mr: a.mr, addr: page(0) })).toMatchObject({ value: 6 });
    expect(await store.pinnedVm(pid)).toBe(10);

    // 10 + 8 > 16: refused before anything is touched, whatever the frames
    expect(
      await codeOf(
        hca('hcaRegMr', { pid, addr: page(4), pages: 8, odp: false, access: ['read', 'write'] }),
      ),
    ).toBe('ENOMEM');
    expect(await store.pinnedVm(pid)).toBe(10);
    expect(await hca('hcaDeregMr', { mr: a.mr })).toEqual({ dereg: true });
    expect(await store.pinnedVm(pid)).toBe(0);
    const b = await hca('hcaRegMr', {
      pid,
      addr: page(4),
      pages: 8,
      odp: false,
      access: ['read', 'write'],
    });
    expect(await store.pinnedVm(pid)).toBe(8);
    expect(await store.pinnedVm(child)).toBe(0);
    await hca('hcaDeregMr', { mr: b.mr });
    await rpc.call('exit', { pid: child });
    await rpc.call('exit', { pid });
  });

  it("unpin with a wrong gen is the caller's error: EINVAL, and nothing is unpinned", async () => {
    const { pid, page } = await space(2);
    const { mr } = await hca('hcaRegMr', {
      pid,
      addr: page(0),
      pages: 2,
      odp: false,
      access: ['read', 'write'],
    });
    const pt = await store.pageTable(pid);
    const [p0, p1] = [pt.get(page(0) / PAGE_SIZE)!, pt.get(page(1) / PAGE_SIZE)!];
    expect(
      await codeOf(
        rpc.call('unpin', {
          pid,
          pages: [
            { pfn: p0.pfn, gen: p0.gen },
            { pfn: p1.pfn, gen: p1.gen + 1 },
          ],
          agent: HCA,
        }),
      ),
    ).toBe('EINVAL');
    expect(await store.pinnedVm(pid)).toBe(2);
    // both pins still hold: the munmap cannot free the frames, the dereg's unpin does
    await rpc.call('munmap', { pid, addr: page(0), pages: 2 });
    await t!.settled();
    const freed = (p: { pfn: number; gen: number }) =>
      events('frame.free', (e) => e.pfn === p.pfn && e.gen === p.gen).length;
    expect([freed(p0), freed(p1)]).toEqual([0, 0]);
    expect(await hca('hcaDeregMr', { mr })).toEqual({ dereg: true });
    await t!.settled();
    expect([freed(p0), freed(p1)]).toEqual([1, 1]);
    expect(await store.pinnedVm(pid)).toBe(0);
  });

  it('the whole trace satisfies every invariant', async () => {
    const all = await t!.settled();
    expect(violatedInvariants(all)).toEqual([]);
    expect(events('access', (e) => e.agent === HCA).length).toBeGreaterThan(10);
  });
});

describe('hca0 paused past its liveness lease', () => {
  let t: TestLab | undefined;
  let lab: LocalLab;
  let rpc: RpcClient;
  let store: Store;
  let trace: TraceLog;

  beforeAll(async () => {
    t = await startTestLab(
      {
        mode: 'patched',
        frames: 64,
        cpus: 1,
        mmReplicas: 2,
        observer: false,
        subscribers: [{ name: HCA, kind: 'hca', invalidateLatencyMs: 0 }],
        env: { MMLAB_CALLBACK_TIMEOUT_MS: '500', MMLAB_SUBSCRIBER_LEASE_MS: '1500' },
      },
      { rpcTimeoutMs: 20_000 },
    );
    ({ lab, rpc, store, trace } = t);
  });
  afterAll(async () => {
    await t?.stop();
  });

  const hca = <N extends RpcName>(name: N, req: Req<N>): Promise<Res<N>> =>
    rpc.call(name, req, { id: HCA });

  it('is fenced by mm, has its DMA refused, and comes back from a restart as a new device', async () => {
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 2, prot: 'rw' });
    const { mr } = await hca('hcaRegMr', {
      pid,
      addr,
      pages: 2,
      odp: true,
      access: ['read', 'write'],
    });
    await hca('hcaRdmaWrite', { mr, addr, value: 1 });
    await hca('hcaRdmaWrite', { mr, addr: addr + PAGE_SIZE, value: 2 });

    lab.signal(HCA, 'SIGSTOP');
    // mm waits for the silent subscriber until its lease expires, then fences it and goes on.
    await rpc.call('munmap', { pid, addr, pages: 1 });
    expect(await store.isFenced(HCA)).toBe(true);
    await trace.next((e) => e.kind === 'mn.fenced' && e.subscriber === HCA);
    lab.signal(HCA, 'SIGCONT');

    // The page mm did not touch is still in the device table: the DMA is refused.
    expect(await codeOf(hca('hcaRdmaRead', { mr, addr: addr + PAGE_SIZE }))).toBe('ENODEV');
    await trace.next((e) => e.kind === 'access.refused' && e.agent === HCA && e.pid === pid);
    // A fenced subscriber cannot register on another process (mm refuses until it restarts).
    const other = await rpc.call('processCreate', {});
    const otherAddr = (await rpc.call('mmap', { pid: other.pid, pages: 1, prot: 'rw' })).addr;
    expect(
      await codeOf(
        hca('hcaRegMr', { pid: other.pid, addr: otherAddr, pages: 1, odp: true, access: ['read'] }),
      ),
    ).toBe('ENODEV');

    await lab.restart(HCA);
    expect(await store.isFenced(HCA)).toBe(false);
    expect(await codeOf(hca('hcaRdmaRead', { mr, addr: addr + PAGE_SIZE }))).toBe('EINVAL'); // MRs died with it
    const again = await hca('hcaRegMr', {
      pid,
      addr: addr + PAGE_SIZE,
      pages: 1,
      odp: true,
      access: ['read'],
    });
    expect(await hca('hcaRdmaRead', { mr: again.mr, addr: addr + PAGE_SIZE })).toMatchObject({
      value: 2,
      npf: 1,
    });
  });
});

describe('inject range-end-mismatch: hca0 pairs start and end by range (ib_umem_odp, 3.19)', () => {
  let t: TestLab | undefined;
  let rpc: RpcClient;
  let trace: TraceLog;

  beforeAll(async () => {
    t = await startTestLab(
      {
        mode: 'patched',
        frames: 32,
        cpus: 1,
        mmReplicas: 1,
        observer: false,
        inject: ['range-end-mismatch'],
        subscribers: [{ name: HCA, kind: 'hca', invalidateLatencyMs: 0 }],
      },
      { rpcTimeoutMs: 20_000 },
    );
    ({ rpc, trace } = t);
  });
  afterAll(async () => {
    await t?.stop();
  });

  it("an end sent with another range leaves the MR's count raised: its faults never complete", async () => {
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 8, prot: 'rw' });
    const page = (i: number) => addr + i * PAGE_SIZE;
    const hca = <N extends RpcName>(name: N, req: Req<N>): Promise<Res<N>> =>
      rpc.call(name, req, { id: HCA });
    const { mr } = await hca('hcaRegMr', {
      pid,
      addr,
      pages: 8,
      odp: true,
      access: ['read', 'write'],
    });
    await hca('hcaRdmaWrite', { mr, addr: page(0), value: 1 });
    // start [4, 8) raises the MR's count; the end comes as [8, 12), outside the MR: not lowered
    await rpc.call('munmap', { pid, addr: page(4), pages: 4 });
    const end = await trace.next<EventOf<'mn.recv'>>(
      (e) =>
        e.kind === 'mn.recv' &&
        e.agent === HCA &&
        e.pid === pid &&
        e.callback === 'invalidate_range_end',
    );
    expect([end.start, end.end]).toEqual([page(8), page(12)]);
    // nothing is being invalidated and page 1 is mapped (a CPU reads it), yet the device's
    // fault on it retries until it gives up
    expect((await rpc.call('cpuAccess', { pid, addr: page(1), op: 'read' }, { id: 0 })).value).toBe(
      0,
    );
    expect(await codeOf(hca('hcaRdmaRead', { mr, addr: page(1) }))).toBe('EAGAIN');
    // (the device's trace comes in batches: its npf.end may follow the reply)
    await trace.next(
      (e) => e.kind === 'npf.end' && e.pid === pid && e.addr === page(1) && e.result === 'EAGAIN',
    );
    const npf = trace.events.filter(
      (e): e is EventOf<'npf.end'> => e.kind === 'npf.end' && e.pid === pid && e.addr === page(1),
    );
    expect(npf.map((e) => e.result)).toEqual(['EAGAIN']);
    expect(npf[0].retries).toBeGreaterThan(0);
    // the entry installed before the invalidation still works: only faults are stuck
    expect(await hca('hcaRdmaRead', { mr, addr: page(0) })).toMatchObject({ value: 1, npf: 0 });
  });
});
