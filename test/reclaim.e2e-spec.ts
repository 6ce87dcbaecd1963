/**
 * Reclaim and swap against real services (two mm replicas, a CPU, an ODP HCA): a reclaim pass
 * writes anonymous pages to swap slots through try_to_unmap_one — the secondary MMU told with
 * invalidate_page after the PT lock is dropped (v3.7) and before the frame is freed — and a
 * fault reads them back (do_swap_page); fork shares swap entries and the COW reuse rule counts
 * them; munmap and exit give the slots back. The legacy twin (v3.6: invalidate_page under the
 * PT lock) is examples/seed/try_to_unmap_one.yaml, reclaim-examples.e2e-spec.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type EventOf, PAGE_SIZE, type TraceKind } from '@mmlab/protocol';
import type { RpcClient } from '@mmlab/runtime';
import { GLOBAL } from '@mmlab/model';
import { type TestLab, startTestLab, until, violatedInvariants } from '@mmlab/testing';

const HCA = 'hca0';

const events = <K extends TraceKind>(
  all: readonly unknown[],
  kind: K,
  pred: (e: EventOf<K>) => boolean = () => true,
) =>
  (all as EventOf<TraceKind>[]).filter(
    (e): e is EventOf<K> => e.kind === kind && pred(e as EventOf<K>),
  );

describe('reclaim to swap and back (patched, v3.7)', () => {
  let t: TestLab | undefined;
  let rpc: RpcClient;

  beforeAll(async () => {
    t = await startTestLab(
      {
        mode: 'patched',
        frames: 32,
        swapSlots: 64,
        cpus: 1,
        mmReplicas: 2,
        subscribers: [{ name: HCA, kind: 'hca' }],
      },
      { rpcTimeoutMs: 20_000 },
    );
    ({ rpc } = t);
  });
  afterAll(async () => {
    await t?.stop();
  });

  const read = async (pid: number, addr: number) =>
    (await rpc.call('cpuAccess', { pid, addr, op: 'read' }, { id: 0 })).value;
  const write = (pid: number, addr: number, value: number) =>
    rpc.call('cpuAccess', { pid, addr, op: 'write', value }, { id: 0 });

  it('a reclaim pass swaps pages out; the next access reads them back with their data', async () => {
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 8, prot: 'rw' });
    const page = (i: number) => addr + i * PAGE_SIZE;
    for (let i = 0; i < 8; i++) await write(pid, page(i), 100 + i);
    const before = await rpc.call('meminfo', {});
    const r = await rpc.call('reclaim', { pages: 6 });
    expect(r.reclaimed).toBe(6);
    expect(r.swapFull).toBe(false);
    const after = await rpc.call('meminfo', {});
    expect(after.free).toBe(before.free + 6);
    const sw = await rpc.call('swapinfo', {});
    expect(sw.slots - sw.free).toBe(6);
    for (let i = 0; i < 8; i++) expect(await read(pid, page(i))).toBe(100 + i);
    const all = await t!.settled();
    const outs = events(all, 'swap.out', (e) => e.pid === pid);
    const ins = events(all, 'swap.in', (e) => e.pid === pid);
    expect(outs).toHaveLength(6);
    expect(ins.map((e) => e.slot).sort()).toEqual(outs.map((e) => e.slot).sort());
    // read back from the swap cache? no: the frames were freed, so read from the slots
    expect(ins.every((e) => !e.cached)).toBe(true);
    // a write after the swap-in reuses the page (mapped once, its slot freed): no copy
    const w = await write(pid, page(0), 7);
    expect(await read(pid, page(0))).toBe(7);
    expect(w.pfn).toBe(ins.find((e) => e.addr === page(0))?.pfn ?? w.pfn);
    await rpc.call('exit', { pid });
    const end = await rpc.call('swapinfo', {});
    expect(end.free).toBe(end.slots);
  });

  it('an ODP MR: invalidate_page reaches the HCA after the PT lock is dropped and before the free', async () => {
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 4, prot: 'rw' });
    const { mr } = await rpc.call(
      'hcaRegMr',
      { pid, addr, pages: 4, odp: true, access: ['read', 'write'] },
      { id: HCA },
    );
    for (let i = 0; i < 4; i++)
      await rpc.call(
        'hcaRdmaWrite',
        { mr, addr: addr + i * PAGE_SIZE, value: 50 + i },
        { id: HCA },
      );
    const r = await rpc.call('reclaim', { pages: 32 });
    expect(r.reclaimed).toBeGreaterThanOrEqual(4);
    for (let i = 0; i < 4; i++)
      expect(
        (await rpc.call('hcaRdmaRead', { mr, addr: addr + i * PAGE_SIZE }, { id: HCA })).value,
      ).toBe(50 + i);
    const all = await t!.settled();
    for (const out of events(all, 'swap.out', (e) => e.pid === pid)) {
      const inv = events(
        all,
        'mn.page',
        (e) => e.pid === pid && e.addr === out.addr && e.op === out.op,
      )[0];
      expect(inv, `invalidate_page for ${out.addr}`).toBeDefined();
      const send = events(all, 'mn.send', (e) => e.inv === inv.inv && e.subscriber === HCA)[0];
      expect(send?.ptl, 'sent with no PT lock held (v3.7)').toBeNull();
      const free = events(all, 'frame.free', (e) => e.pfn === out.pfn && e.gen === out.gen)[0];
      const ack = events(all, 'mn.ack', (e) => e.inv === inv.inv && e.subscriber === HCA)[0];
      expect(ack).toBeDefined();
      expect(free).toBeDefined();
      expect(ack.ts).toBeLessThanOrEqual(free.ts);
    }
    await rpc.call('hcaDeregMr', { mr }, { id: HCA });
    await rpc.call('exit', { pid });
  });

  it('fork shares swap entries: the COW reuse rule counts them, each side keeps its data', async () => {
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 2, prot: 'rw' });
    await write(pid, addr, 1);
    await write(pid, addr + PAGE_SIZE, 2);
    await rpc.call('reclaim', { pages: 32 });
    const { pid: child } = await rpc.call('fork', { pid });
    // the parent swaps page 0 in (read): the child's swap PTE still names the slot, so the
    // parent's write must copy, not reuse
    expect(await read(pid, addr)).toBe(1);
    await write(pid, addr, 10);
    expect(await read(child, addr)).toBe(1);
    expect(await read(pid, addr)).toBe(10);
    expect(await read(child, addr + PAGE_SIZE)).toBe(2);
    await write(child, addr + PAGE_SIZE, 20);
    expect(await read(pid, addr + PAGE_SIZE)).toBe(2);
    for (const p of [pid, child]) await rpc.call('exit', { pid: p });
    const end = await rpc.call('swapinfo', {});
    expect(end.free).toBe(end.slots);
  });

  it('shared anonymous memory is a shmem object: shared by a fork before any touch, swapped out and back, gone with its last mapping', async () => {
    const { pid } = await rpc.call('processCreate', {});
    const start = await rpc.call('meminfo', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 4, prot: 'rw', flags: ['shared'] });
    const page = (i: number) => addr + i * PAGE_SIZE;
    // nothing populated before the fork: the child's faults find the parent's pages and
    // vice versa, in the object's page cache
    const { pid: child } = await rpc.call('fork', { pid });
    for (let i = 0; i < 4; i++) await write(child, page(i), 300 + i);
    for (let i = 0; i < 4; i++) expect(await read(pid, page(i))).toBe(300 + i);
    const before = await rpc.call('swapinfo', {});
    const r = await rpc.call('reclaim', { pages: 32 });
    expect(r.reclaimed).toBeGreaterThanOrEqual(4);
    // shmem_writepage: the pages are in swap slots, named by the object's page cache
    expect((await rpc.call('swapinfo', {})).free).toBeLessThanOrEqual(before.free - 4);
    for (let i = 0; i < 4; i++) expect(await read(pid, page(i))).toBe(300 + i);
    await write(pid, page(1), 7);
    expect(await read(child, page(1))).toBe(7);
    await rpc.call('exit', { pid: child });
    expect(await read(pid, page(1))).toBe(7); // the parent's mapping keeps the object
    await rpc.call('exit', { pid });
    // shmem_evict_inode with the last mapping: every page and slot back
    expect((await rpc.call('meminfo', {})).free).toBe(start.free);
    const sw = await rpc.call('swapinfo', {});
    expect(sw.free).toBe(sw.slots);
  });

  it('files: remap_file_pages gives a regular file a linear VMA of its own; bad input is refused and changes nothing', async () => {
    const { ino } = await rpc.call('fileCreate', { pages: 4 });
    for (let i = 0; i < 4; i++) await rpc.call('fileWrite', { ino, page: i, value: 10 + i });
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', {
      pid,
      pages: 4,
      prot: 'rw',
      flags: ['shared'],
      file: ino,
    });
    const { addr: anon } = await rpc.call('mmap', { pid, pages: 2, prot: 'rw' });
    const page = (i: number) => addr + i * PAGE_SIZE;
    expect(await read(pid, page(1))).toBe(11);
    // dirty-accounted: mmap_region's emulation, not a nonlinear VMA
    expect(
      await rpc.call('remapFilePages', { pid, addr: page(0), pages: 2, pgoff: 2 }),
    ).toMatchObject({ nonlinear: false });
    expect(await read(pid, page(0))).toBe(12);
    expect(await read(pid, page(1))).toBe(13);
    expect(await read(pid, page(2))).toBe(12);
    const codeOf = (p: Promise<unknown>) =>
      p.then(
        () => 'ok',
        (e: { code?: string }) => e.code,
      );
    // not a shared mapping of a file, or past its VMA, or a file that is not there
    expect(await codeOf(rpc.call('remapFilePages', { pid, addr: anon, pages: 1, pgoff: 0 }))).toBe(
      'EINVAL',
    );
    expect(
      await codeOf(rpc.call('remapFilePages', { pid, addr: page(3), pages: 2, pgoff: 0 })),
    ).toBe('EINVAL');
    expect(await codeOf(rpc.call('mmap', { pid, pages: 1, prot: 'r', file: ino + 1000 }))).toBe(
      'ENOENT',
    );
    expect(await codeOf(rpc.call('fileRead', { ino, page: 4 }))).toBe('EINVAL');
    expect(
      await codeOf(rpc.call('mmap', { pid, pages: 1, prot: 'r', flags: ['shared', 'private'] })),
    ).toBe('EINVAL');
    // nothing changed by them: the mapping still reads as before
    expect(await read(pid, page(0))).toBe(12);
    expect(await read(pid, anon)).toBe(0);
    await rpc.call('exit', { pid });
    expect((await rpc.call('fileRead', { ino, page: 0 })).value).toBe(10);
  });

  it('the whole trace satisfies every invariant', async () => {
    const all = await t!.settled();
    expect(violatedInvariants(all)).toEqual([]);
    expect(events(all, 'reclaim').length).toBeGreaterThan(0);
  });
});

describe('bigger than memory: an ODP MR four times the frames, a guest twice them (kswapd and direct reclaim)', () => {
  const FRAMES = 24;
  let t: TestLab | undefined;
  let rpc: RpcClient;

  beforeAll(async () => {
    t = await startTestLab(
      {
        mode: 'patched',
        frames: FRAMES,
        swapSlots: 256,
        watermarks: { low: 4, high: 8 },
        cpus: 1,
        mmReplicas: 2,
        subscribers: [
          { name: HCA, kind: 'hca' },
          { name: 'kvm0', kind: 'kvm', mmuLock: 'spin' },
        ],
      },
      { rpcTimeoutMs: 30_000 },
    );
    ({ rpc } = t);
  });
  afterAll(async () => {
    await t?.stop();
  });
  /** kswapd runs in the background: its last pass ends (its lease goes) before the lab is judged */
  const kswapdIdle = () =>
    until(
      async () => (await t!.store.redis.exists(GLOBAL.kswapd)) === 0,
      'kswapd to finish its pass',
    );

  it('an ODP MR over 4x the frames: a full pass of RDMA writes, then reads with the right data', async () => {
    const pages = 4 * FRAMES;
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages, prot: 'rw' });
    const page = (i: number) => addr + i * PAGE_SIZE;
    const { mr } = await rpc.call(
      'hcaRegMr',
      { pid, addr, pages, odp: true, access: ['read', 'write'] },
      { id: HCA },
    );
    for (let i = 0; i < pages; i++)
      await rpc.call('hcaRdmaWrite', { mr, addr: page(i), value: 1000 + i }, { id: HCA });
    for (let i = 0; i < pages; i++)
      expect(
        (await rpc.call('hcaRdmaRead', { mr, addr: page(i) }, { id: HCA })).value,
        `page ${i}`,
      ).toBe(1000 + i);
    const all = await t!.settled();
    const outs = events(all, 'swap.out', (e) => e.pid === pid);
    expect(outs.length).toBeGreaterThanOrEqual(pages - FRAMES);
    // every page that left memory was taken from the HCA first: its invalidate_page acked
    // before the frame was freed (the HCA mapped every page: it wrote them all). Only the
    // passes that ended (their reclaim event): kswapd may still be in one, in the background.
    const ended = new Set(events(all, 'reclaim').map((e) => e.op));
    expect(ended.size).toBeGreaterThan(0);
    for (const out of outs.filter((o) => ended.has(o.op))) {
      const inv = events(all, 'mn.page', (e) => e.op === out.op && e.addr === out.addr)[0];
      const ack = events(
        all,
        'mn.ack',
        (e) => e.inv === inv?.inv && e.subscriber === HCA && e.callback === 'invalidate_page',
      )[0];
      expect(
        ack,
        `hca0 acked the invalidation of ${out.addr}: ${JSON.stringify(
          all.filter(
            (e) =>
              ('inv' in e && e.inv === inv?.inv) ||
              (e.op === out.op && 'addr' in e && e.addr === out.addr),
          ),
        )}`,
      ).toBeDefined();
      const free = events(all, 'frame.free', (e) => e.pfn === out.pfn && e.gen === out.gen)[0];
      if (free) expect(ack.ts).toBeLessThanOrEqual(free.ts);
    }
    const why = new Set(events(all, 'reclaim', (e) => e.reclaimed > 0).map((e) => e.why));
    expect(why.has('kswapd'), 'kswapd reclaimed underneath').toBe(true);
    await rpc.call('hcaDeregMr', { mr }, { id: HCA });
    await rpc.call('exit', { pid });
    await kswapdIdle();
  });

  it('a KVM guest with twice the frames of guest memory writes and reads every gfn', async () => {
    const pages = 2 * FRAMES;
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages, prot: 'rw' });
    const kvm = { id: 'kvm0' };
    const { vm } = await rpc.call(
      'kvmCreateVm',
      { pid, memslots: [{ gfn: 0, pages, addr }], vcpus: 1 },
      kvm,
    );
    for (let gfn = 0; gfn < pages; gfn++)
      await rpc.call('kvmGuestWrite', { vm, vcpu: 0, gfn, value: 7000 + gfn }, kvm);
    for (let gfn = 0; gfn < pages; gfn++)
      expect((await rpc.call('kvmGuestRead', { vm, vcpu: 0, gfn }, kvm)).value, `gfn ${gfn}`).toBe(
        7000 + gfn,
      );
    const all = await t!.settled();
    expect(events(all, 'swap.out', (e) => e.pid === pid).length).toBeGreaterThan(0);
    expect(
      events(all, 'smap.clear', (e) => e.agent === 'kvm0' && e.pid === pid).length,
    ).toBeGreaterThan(0);
    await rpc.call('kvmDestroyVm', { vm }, kvm);
    await rpc.call('exit', { pid });
    await kswapdIdle();
  });

  it('the whole trace satisfies every invariant', async () => {
    const all = await t!.settled();
    expect(violatedInvariants(all)).toEqual([]);
  });
});

describe('reclaim ages pages through the young callbacks', () => {
  let t: TestLab | undefined;
  let rpc: RpcClient;

  beforeAll(async () => {
    t = await startTestLab(
      {
        mode: 'patched',
        frames: 32,
        swapSlots: 32,
        cpus: 1,
        mmReplicas: 2,
        subscribers: [
          { name: HCA, kind: 'hca' },
          { name: 'kvm0', kind: 'kvm', mmuLock: 'spin' },
        ],
      },
      { rpcTimeoutMs: 20_000 },
    );
    ({ rpc } = t);
  });
  afterAll(async () => {
    await t?.stop();
  });

  const kvm = { id: 'kvm0' };
  const swappedOut = async (pid: number, addr: number) =>
    events(await t!.settled(), 'swap.out', (e) => e.pid === pid && e.addr === addr);

  it('a page a KVM guest keeps touching stays resident while an idle one is swapped out', async () => {
    // an idle page elsewhere, older than the guest's: the first to go
    const { pid: idle } = await rpc.call('processCreate', {});
    const { addr: z } = await rpc.call('mmap', { pid: idle, pages: 1, prot: 'rw' });
    await rpc.call('cpuAccess', { pid: idle, addr: z, op: 'write', value: 1 }, { id: 0 });
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 2, prot: 'rw' });
    const { vm } = await rpc.call(
      'kvmCreateVm',
      { pid, memslots: [{ gfn: 0, pages: 2, addr }], vcpus: 1 },
      kvm,
    );
    await rpc.call('kvmGuestWrite', { vm, vcpu: 0, gfn: 0, value: 10 }, kvm); // A: hot
    await rpc.call('kvmGuestWrite', { vm, vcpu: 0, gfn: 1, value: 11 }, kvm); // B: idle
    // every page deactivated (its young bits cleared: KVM's too), the oldest swapped out
    expect(await rpc.call('reclaim', { pages: 1 })).toMatchObject({ reclaimed: 1 });
    expect(await swappedOut(idle, z)).toHaveLength(1);
    // the guest touches A; the next pass finds it young through clear_flush_young and keeps
    // it, and takes B, which nobody touched
    expect(await rpc.call('kvmGuestRead', { vm, vcpu: 0, gfn: 0 }, kvm)).toMatchObject({
      value: 10,
    });
    const r = await rpc.call('reclaim', { pages: 1 });
    expect(r).toMatchObject({ reclaimed: 1 });
    expect(r.referenced).toBeGreaterThanOrEqual(1);
    expect(await swappedOut(pid, addr)).toEqual([]);
    expect(await swappedOut(pid, addr + PAGE_SIZE)).toHaveLength(1);
    const all = await t!.settled();
    const asked = events(
      all,
      'mn.ack',
      (e) => e.subscriber === 'kvm0' && e.pid === pid && e.callback === 'clear_flush_young',
    );
    expect(asked.length).toBeGreaterThan(0);
    // both read back right: B from its slot
    expect((await rpc.call('kvmGuestRead', { vm, vcpu: 0, gfn: 1 }, kvm)).value).toBe(11);
    expect((await rpc.call('kvmGuestRead', { vm, vcpu: 0, gfn: 0 }, kvm)).value).toBe(10);
    await rpc.call('kvmDestroyVm', { vm }, kvm);
    for (const p of [pid, idle]) await rpc.call('exit', { pid: p });
  });

  it("an ODP device's hot page is not protected: invalidated, swapped out and faulted back", async () => {
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 2, prot: 'rw' });
    const hot = addr + PAGE_SIZE;
    await rpc.call('cpuAccess', { pid, addr, op: 'write', value: 1 }, { id: 0 }); // idle, older
    const { mr } = await rpc.call(
      'hcaRegMr',
      { pid, addr: hot, pages: 1, odp: true, access: ['read', 'write'] },
      { id: HCA },
    );
    await rpc.call('hcaRdmaWrite', { mr, addr: hot, value: 20 }, { id: HCA });
    expect(await rpc.call('reclaim', { pages: 1 })).toMatchObject({ reclaimed: 1 });
    expect(await swappedOut(pid, addr)).toHaveLength(1);
    // the device keeps using the page: ib_umem_odp has no young callbacks, nothing says so
    expect((await rpc.call('hcaRdmaRead', { mr, addr: hot }, { id: HCA })).value).toBe(20);
    expect(await rpc.call('reclaim', { pages: 1 })).toMatchObject({ reclaimed: 1 });
    const [out] = await swappedOut(pid, hot);
    expect(out).toBeDefined();
    const back = await rpc.call('hcaRdmaRead', { mr, addr: hot }, { id: HCA });
    expect(back).toMatchObject({ value: 20, npf: 1 });
    const all = await t!.settled();
    const inv = events(all, 'mn.page', (e) => e.op === out.op && e.addr === hot)[0];
    expect(
      events(all, 'mn.ack', (e) => e.inv === inv.inv && e.subscriber === HCA),
      'hca0 acked the invalidate_page',
    ).toHaveLength(1);
    expect(events(all, 'swap.in', (e) => e.pid === pid && e.addr === hot)).toHaveLength(1);
    // the HCA never got asked about young bits
    expect(
      events(all, 'mn.send', (e) => e.subscriber === HCA && e.callback === 'clear_flush_young'),
    ).toEqual([]);
    await rpc.call('hcaDeregMr', { mr }, { id: HCA });
    await rpc.call('exit', { pid });
  });

  it('the whole trace satisfies every invariant', async () => {
    const all = await t!.settled();
    expect(violatedInvariants(all)).toEqual([]);
  });
});
