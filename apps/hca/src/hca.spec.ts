/**
 * The device model against an in-memory stand-in for mm and Redis (the real ones are in
 * test/hca.e2e-spec.ts): faults, invalidations and their races, driven directly.
 */
import { describe, expect, it } from 'vitest';
import {
  type Access,
  type GupPage,
  MmlabError,
  PAGE_SIZE,
  type TraceEvent,
  type TraceKind,
  vpnOf,
} from '@mmlab/protocol';
import { ReplyControl, Tracer, runWithReply, sleep } from '@mmlab/runtime';
import { type HcaEnv, type HcaRpc, type HcaStore, createContext } from './context';
import { GUP_MS_PER_PAGE, Hca } from './hca';

const BASE = 0x10000000;
const page = (i: number) => BASE + i * PAGE_SIZE;

/** Frames, one process's VMAs and PTEs, gup and the notifier registry: just enough mm. */
class FakeMm {
  prot = new Map<number, 'none' | 'r' | 'rw'>(); // vpn → prot
  ptes = new Map<number, { pfn: number; gen: number; writable: boolean }>();
  frames = new Map<number, { gen: number; state: string; data: number }>([
    [0, { gen: 1, state: 'zero', data: 0 }],
  ]);
  fenced = new Set<string>();
  ptlHolder: string | null = null;
  gupCalls: Array<{
    addr: number;
    pages: number;
    write: boolean;
    pin: boolean;
    force?: boolean;
  }> = [];
  /** the deadline each gup call was given (RpcClient's timeoutMs) */
  gupDeadlines: Array<number | undefined> = [];
  registered = new Set<number>();
  calls: string[] = [];
  freeFrames = 1000;
  private nextPfn = 1;

  map(first: number, pages: number, prot: 'none' | 'r' | 'rw'): void {
    for (let i = 0; i < pages; i++) this.prot.set(vpnOf(page(first + i)), prot);
  }

  unmapPage(addr: number): void {
    const pte = this.ptes.get(vpnOf(addr));
    this.ptes.delete(vpnOf(addr));
    if (pte && pte.pfn !== 0) this.frames.get(pte.pfn)!.state = 'free';
  }

  gup(addr: number, pages: number, write: boolean, pin: boolean, force?: boolean): GupPage[] {
    this.gupCalls.push({ addr, pages, write, pin, ...(force !== undefined && { force }) });
    if (pin && write && pages > this.freeFrames) throw new MmlabError('ENOMEM', 'pin');
    const out: GupPage[] = [];
    for (let i = 0; i < pages; i++) {
      const a = addr + i * PAGE_SIZE;
      const vpn = vpnOf(a);
      const prot = this.prot.get(vpn);
      if (!prot || prot === 'none') throw new MmlabError('EFAULT', `0x${a.toString(16)}`);
      if (write && prot !== 'rw') throw new MmlabError('EFAULT', `0x${a.toString(16)}`);
      let pte = this.ptes.get(vpn);
      if (!pte || (write && !pte.writable)) {
        if (write) {
          const pfn = this.nextPfn++;
          this.frames.set(pfn, { gen: 1, state: 'used', data: 0 });
          pte = { pfn, gen: 1, writable: true };
        } else pte = { pfn: 0, gen: 1, writable: false };
        this.ptes.set(vpn, pte);
      }
      out.push({ addr: a, ...pte });
    }
    return out;
  }

  readonly store: HcaStore = {
    frameAccess: async (pfn: number, op: Access, value: number | undefined, agent: string) => {
      await sleep(1);
      if (this.fenced.has(agent)) return 'FENCED';
      const f = this.frames.get(pfn);
      if (!f) return null;
      if (op === 'write') f.data = value ?? 0;
      return { gen: f.gen, state: f.state, value: f.data };
    },
    ptlHeldBy: async () => this.ptlHolder,
    subscriberAlive: async () => {},
    livenessDrop: async () => {},
    unfence: async (agent: string) => {
      this.fenced.delete(agent);
    },
    isFenced: async (agent: string) => this.fenced.has(agent),
  };

  readonly rpc = {
    call: async (name: string, req: Record<string, unknown>, o?: { timeoutMs?: number }) => {
      this.calls.push(name);
      if (name === 'gup') this.gupDeadlines.push(o?.timeoutMs);
      await sleep(1);
      switch (name) {
        case 'gup':
          return {
            pages: this.gup(
              req.addr as number,
              req.pages as number,
              req.write as boolean,
              req.pin as boolean,
              req.force as boolean | undefined,
            ),
          };
        case 'unpin':
          return { freed: 0 };
        case 'notifierRegister':
          this.registered.add(req.pid as number);
          return { registered: true };
        case 'notifierUnregister':
          return { unregistered: this.registered.delete(req.pid as number) };
        default:
          throw new Error(`unexpected ${name}`);
      }
    },
  } as unknown as HcaRpc;
}

function setup(env: Partial<HcaEnv> = {}) {
  const mm = new FakeMm();
  const tracer = new Tracer(null, 'hca', 'hca0');
  const events: TraceEvent[] = [];
  tracer.tap((e) => events.push(e));
  const hca = new Hca(
    createContext({
      name: 'hca0',
      store: mm.store,
      rpc: mm.rpc,
      tracer,
      env: {
        MMLAB_INVALIDATE_LATENCY: '0',
        MMLAB_NPF_TIMEOUT_MS: 1000,
        MMLAB_NPF_DELAY_MS: 0,
        MMLAB_SUBSCRIBER_LEASE_MS: 3000,
        MMLAB_SEED: 1,
        MMLAB_INJECT: [],
        MMLAB_FAULT_DEADLINE_MS: 10_000,
        MMLAB_RPC_TIMEOUT_MS: 5_000,
        ...env,
      },
      log: { warn: () => {} },
    }),
  );
  const of = <K extends TraceKind>(kind: K) =>
    events.filter((e): e is Extract<TraceEvent, { kind: K }> => e.kind === kind);
  return { mm, hca, events, of };
}

const codeOf = async (p: Promise<unknown>): Promise<string> => {
  try {
    await p;
    return 'ok';
  } catch (e) {
    return e instanceof MmlabError ? e.code : `untyped: ${String(e)}`;
  }
};

const cb = (inv: string, start: number, end: number) => ({
  pid: 1,
  inv,
  owner: 'mm-0/munmap#1',
  start,
  end,
  event: 'unmap' as const,
});

describe('hca: ODP MRs and network page faults', () => {
  it('faults a page in on a miss, then hits; registers on the first ODP MR only', async () => {
    const { mm, hca, of } = setup();
    mm.map(0, 8, 'rw');
    const { mr } = await hca.regMr({ pid: 1, addr: BASE, pages: 8, odp: true, access: ['read'] });
    await hca.regMr({ pid: 1, addr: BASE, pages: 8, odp: true, access: ['read'] });
    expect(mm.calls.filter((c) => c === 'notifierRegister')).toHaveLength(1);
    expect(mm.gupCalls).toHaveLength(0); // nothing pinned, nothing mapped

    const r1 = await hca.rdma(mr, page(2), 'read');
    expect(r1).toMatchObject({ value: 0, pfn: 0, npf: 1, stale: false });
    expect(mm.gupCalls).toEqual([{ addr: page(2), pages: 1, write: false, pin: false }]);
    expect(of('smap.set')).toMatchObject([{ agent: 'hca0', pid: 1, addr: page(2), pfn: 0 }]);
    expect(of('npf.begin')).toMatchObject([{ addr: page(2), pages: 1, write: false }]);
    expect(of('npf.end')).toMatchObject([{ result: 'ok', retries: 0 }]);
    const r2 = await hca.rdma(mr, page(2), 'read');
    expect(r2.npf).toBe(0);
    expect(of('access')).toHaveLength(2);
    expect(of('access')[0]).toMatchObject({ agent: 'hca0', rw: 'read', addr: page(2), pfn: 0 });
  });

  it('every fault of a writable MR is a write fault, reads included (3.19: no downgrade); writes land in the frame', async () => {
    const { mm, hca, of } = setup();
    mm.map(0, 4, 'rw');
    const { mr } = await hca.regMr({
      pid: 1,
      addr: BASE,
      pages: 4,
      odp: true,
      access: ['read', 'write'],
    });
    const w = await hca.rdma(mr, page(1), 'write', 42);
    expect(w.npf).toBe(1);
    expect(mm.gupCalls[0]).toMatchObject({ write: true, pin: false });
    expect(mm.frames.get(w.pfn)?.data).toBe(42);
    expect(of('smap.set')[0]).toMatchObject({ writable: true, pfn: w.pfn });
    expect(await hca.rdma(mr, page(1), 'read')).toMatchObject({ value: 42, npf: 0 });
    // a read of another page faults for write too (ODP_WRITE_ALLOWED_BIT): it breaks COW
    const r = await hca.rdma(mr, page(3), 'read');
    expect(mm.gupCalls[1]).toMatchObject({ addr: page(3), write: true });
    expect(r.pfn).not.toBe(0); // not the zero page: a page of its own, mapped writable
    expect(of('smap.set')[1]).toMatchObject({ addr: page(3), writable: true });
  });

  it('checks rights and addresses; passes mm errors through; never leaves umem_mutex held', async () => {
    const { mm, hca, of } = setup();
    mm.map(0, 2, 'rw');
    mm.map(2, 1, 'none');
    mm.map(3, 1, 'r');
    const ro = (await hca.regMr({ pid: 1, addr: BASE, pages: 4, odp: true, access: ['read'] })).mr;
    const rw = (
      await hca.regMr({ pid: 1, addr: BASE, pages: 4, odp: true, access: ['read', 'write'] })
    ).mr;
    expect(await codeOf(hca.rdma(ro, page(0), 'write', 1))).toBe('EPERM');
    expect(mm.gupCalls).toHaveLength(0);
    expect(await codeOf(hca.rdma(ro, page(0) + 8, 'read'))).toBe('EINVAL');
    expect(await codeOf(hca.rdma(ro, page(4), 'read'))).toBe('EINVAL');
    expect(await codeOf(hca.rdma(99, page(0), 'read'))).toBe('EINVAL');
    expect(await codeOf(hca.rdma(ro, page(2), 'read'))).toBe('EFAULT'); // PROT_NONE
    expect(await codeOf(hca.rdma(rw, page(3), 'write', 1))).toBe('EFAULT'); // read-only VMA
    // a read through a writable MR faults for write: refused by the read-only VMA as well
    expect(await codeOf(hca.rdma(rw, page(3), 'read'))).toBe('EFAULT');
    // a read-only MR faults for read
    expect(await hca.rdma(ro, page(3), 'read')).toMatchObject({ value: 0, npf: 1 });
    expect(of('npf.end').map((e) => e.result)).toEqual(['EFAULT', 'EFAULT', 'EFAULT', 'ok']);
    expect(
      await codeOf(hca.regMr({ pid: 1, addr: BASE + 1, pages: 1, odp: true, access: ['read'] })),
    ).toBe('EINVAL');
    expect(hca.mr(ro)?.umemMutex.isLocked()).toBe(false);
    expect(hca.mr(rw)?.umemMutex.isLocked()).toBe(false);
  });

  it('prefetch maps a range on the fault path; read prefetch maps read-only', async () => {
    const { mm, hca } = setup();
    mm.map(0, 8, 'rw');
    const { mr } = await hca.regMr({
      pid: 1,
      addr: BASE,
      pages: 8,
      odp: true,
      access: ['read', 'write'],
    });
    expect(await hca.prefetch({ mr, addr: page(0), pages: 4, write: true })).toEqual({ mapped: 4 });
    expect(mm.gupCalls).toEqual([{ addr: page(0), pages: 4, write: true, pin: false }]);
    expect((await hca.rdma(mr, page(3), 'write', 5)).npf).toBe(0);
    expect(await hca.prefetch({ mr, addr: page(4), pages: 4, write: false })).toEqual({
      mapped: 4,
    });
    expect((await hca.rdma(mr, page(5), 'read')).npf).toBe(0);
    expect((await hca.rdma(mr, page(5), 'write', 1)).npf).toBe(1); // read-only entry: fault
    expect(await codeOf(hca.prefetch({ mr, addr: page(6), pages: 4, write: false }))).toBe(
      'EINVAL',
    );
  });
});

describe('hca: notifier callbacks', () => {
  it('invalidate_range_start zaps, waits for the device and in-flight DMA; end reopens', async () => {
    const { mm, hca, of } = setup({ MMLAB_INVALIDATE_LATENCY: '30' });
    mm.map(0, 4, 'rw');
    const { mr } = await hca.regMr({
      pid: 1,
      addr: BASE,
      pages: 4,
      odp: true,
      access: ['read', 'write'],
    });
    await hca.rdma(mr, page(0), 'write', 1);
    await hca.rdma(mr, page(1), 'write', 2);
    const dma = hca.rdma(mr, page(1), 'read'); // in flight when the start arrives
    const t0 = Date.now();
    const ack = await hca.notifier.invalidateRangeStart(cb('inv1', page(1), page(4)));
    expect(ack).toEqual({ inv: 'inv1' });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(29);
    expect(hca.ctx.inflight.size).toBe(0);
    await dma;
    // the DMA landed before the zap's completion: its access is before mn.done
    const done = of('mn.done')[0];
    expect(of('access').at(-1)!.tEnd).toBeLessThanOrEqual(done.ts);
    expect(of('smap.clear').map((e) => e.addr)).toEqual([page(1)]);
    expect(hca.mr(mr)?.mtt.get(vpnOf(page(0)))).toBeDefined();
    // while active, a fault on the range waits for the end
    let read: number | undefined;
    const blocked = hca.rdma(mr, page(1), 'read').then((r) => (read = r.value));
    await sleep(50);
    expect(read).toBeUndefined();
    expect(await hca.notifier.invalidateRangeEnd(cb('inv1', page(1), page(4)))).toEqual({
      inv: 'inv1',
    });
    await blocked;
    expect(read).toBe(2);
    expect(of('mn.recv').map((e) => [e.callback, e.start, e.end])).toEqual([
      ['invalidate_range_start', page(1), page(4)],
      ['invalidate_range_end', page(1), page(4)],
    ]);
  });

  it('a fault whose gup raced an invalidation retries (ib_umem_mmu_notifier_retry): nothing installed inside it', async () => {
    const { mm, hca, of, events } = setup({ MMLAB_NPF_DELAY_MS: 60 });
    mm.map(0, 2, 'rw');
    const { mr } = await hca.regMr({ pid: 1, addr: BASE, pages: 2, odp: true, access: ['read'] });
    const fault = hca.rdma(mr, page(0), 'read');
    await sleep(20); // gup done, sleeping in the slow work queue
    await hca.notifier.invalidateRangeStart(cb('inv1', page(0), page(1)));
    await sleep(60);
    await hca.notifier.invalidateRangeEnd(cb('inv1', page(0), page(1)));
    expect((await fault).value).toBe(0);
    expect(of('npf.end')[0]).toMatchObject({ result: 'ok', retries: 1 });
    const kinds = events
      .filter((e) => e.kind === 'smap.set' || e.kind === 'mn.recv')
      .map((e) => (e.kind === 'mn.recv' ? e.callback : e.kind));
    expect(kinds).toEqual(['invalidate_range_start', 'invalidate_range_end', 'smap.set']);
  });

  it('inject skip-seq-recheck: the fault installs while the invalidation is in progress', async () => {
    const { mm, hca, events } = setup({
      MMLAB_NPF_DELAY_MS: 60,
      MMLAB_INJECT: ['skip-seq-recheck'],
    });
    mm.map(0, 2, 'rw');
    const { mr } = await hca.regMr({ pid: 1, addr: BASE, pages: 2, odp: true, access: ['read'] });
    const fault = hca.rdma(mr, page(0), 'read');
    await sleep(20);
    await hca.notifier.invalidateRangeStart(cb('inv1', page(0), page(1)));
    await fault;
    await hca.notifier.invalidateRangeEnd(cb('inv1', page(0), page(1)));
    const kinds = events
      .filter((e) => e.kind === 'smap.set' || e.kind === 'mn.recv')
      .map((e) => (e.kind === 'mn.recv' ? e.callback : e.kind));
    expect(kinds).toEqual(['invalidate_range_start', 'smap.set', 'invalidate_range_end']);
  });

  it('does the work once per inv: a resent start waits for the first and both ack', async () => {
    const { mm, hca, of } = setup({ MMLAB_INVALIDATE_LATENCY: '300' });
    mm.map(0, 1, 'rw');
    const { mr } = await hca.regMr({ pid: 1, addr: BASE, pages: 1, odp: true, access: ['read'] });
    await hca.rdma(mr, page(0), 'read');
    const order: string[] = [];
    const first = hca.notifier
      .invalidateRangeStart(cb('inv1', page(0), page(1)))
      .then((r) => (order.push('first'), r));
    // the resend arrives while the first is still sleeping in the device (300 ms)
    while (of('mn.recv').length < 1) await sleep(1);
    expect(order).toEqual([]);
    const again = await hca.notifier
      .invalidateRangeStart(cb('inv1', page(0), page(1)))
      .then((r) => (order.push('again'), r));
    expect(again).toEqual({ inv: 'inv1' });
    expect(await first).toEqual({ inv: 'inv1' });
    expect(order).toEqual(['first', 'again']); // it waited for the one in progress
    // done already: acked without doing the work again
    expect(await hca.notifier.invalidateRangeStart(cb('inv1', page(0), page(1)))).toEqual({
      inv: 'inv1',
    });
    expect(of('smap.clear')).toHaveLength(1);
    expect(of('mn.recv')).toHaveLength(3);
    expect(of('mn.done')).toHaveLength(3);
    // an end for an inv never started is acked, twice
    expect(await hca.notifier.invalidateRangeEnd(cb('zzz', 0, PAGE_SIZE))).toEqual({ inv: 'zzz' });
    expect(await hca.notifier.invalidateRangeEnd(cb('zzz', 0, PAGE_SIZE))).toEqual({ inv: 'zzz' });
  });

  it('invalidate_page is start and end in one; pinned MRs are never touched', async () => {
    const { mm, hca, of } = setup({ MMLAB_INVALIDATE_LATENCY: '5' });
    mm.map(0, 2, 'rw');
    const odp = (await hca.regMr({ pid: 1, addr: BASE, pages: 2, odp: true, access: ['read'] })).mr;
    const pinned = (
      await hca.regMr({ pid: 1, addr: BASE, pages: 2, odp: false, access: ['read', 'write'] })
    ).mr;
    expect(mm.gupCalls.at(-1)).toEqual({
      addr: BASE,
      pages: 2,
      write: true,
      pin: true,
      force: false,
    });
    expect(of('smap.set')).toHaveLength(2);
    await hca.rdma(odp, page(0), 'read');
    expect(
      await hca.notifier.invalidatePage({ pid: 1, inv: 'p1', owner: 'x', addr: page(0) }),
    ).toEqual({ inv: 'p1' });
    expect(of('smap.clear')).toMatchObject([{ addr: page(0), pfn: 1 }]); // the pinned gup's frame
    expect(hca.mr(pinned)?.mtt.size).toBe(2);
    expect(hca.mr(odp)?.notifiers.notifiersCount).toBe(0);
    expect(of('mn.recv').at(-1)).toMatchObject({ callback: 'invalidate_page', start: page(0) });
    // only the ODP MR registered the notifier
    expect(mm.calls.filter((c) => c === 'notifierRegister')).toHaveLength(1);
  });

  it('reports a sender that still holds a PT lock (mn.ptl_held)', async () => {
    const { mm, hca, of } = setup();
    mm.ptlHolder = 'ptl:0';
    await hca.notifier.invalidateRangeStart(cb('inv1', page(0), page(1)));
    expect(of('mn.ptl_held')).toMatchObject([
      { agent: 'hca0', callback: 'invalidate_range_start', lock: 'ptl:0', owner: 'mm-0/munmap#1' },
    ]);
  });

  it("implements 3.19's ib_umem_notifiers only; a change_pte or young callback sent anyway is acked without work", async () => {
    const { mm, hca, of } = setup();
    expect(hca.notifier.callbacks).toEqual([
      'release',
      'invalidate_page',
      'invalidate_range_start',
      'invalidate_range_end',
    ]);
    mm.map(0, 2, 'rw');
    const { mr } = await hca.regMr({ pid: 1, addr: BASE, pages: 2, odp: true, access: ['read'] });
    await hca.prefetch({ mr, addr: page(0), pages: 2, write: false });
    await hca.rdma(mr, page(0), 'read');
    expect(await hca.notifier.testYoung({ pid: 1, inv: 't1', owner: 'x', addr: page(0) })).toEqual({
      inv: 't1',
      young: false,
    });
    expect(
      await hca.notifier.changePte({
        pid: 1,
        inv: 'k1',
        owner: 'x',
        addr: page(1),
        pfn: 7,
        gen: 2,
        writable: true,
      }),
    ).toEqual({ inv: 'k1' });
    expect(of('smap.clear')).toHaveLength(0);
    expect(hca.mr(mr)?.mtt.size).toBe(2);
  });

  it('release zaps everything and fails later DMA with EFAULT', async () => {
    const { mm, hca, of } = setup();
    mm.map(0, 2, 'rw');
    const { mr } = await hca.regMr({ pid: 1, addr: BASE, pages: 2, odp: true, access: ['read'] });
    await hca.prefetch({ mr, addr: page(0), pages: 2, write: false });
    expect(await hca.notifier.release({ pid: 1, inv: 'r1', owner: 'x' })).toEqual({ inv: 'r1' });
    expect(of('smap.clear').map((e) => e.addr)).toEqual([page(0), page(1)]);
    expect(await codeOf(hca.rdma(mr, page(0), 'read'))).toBe('EFAULT');
    expect(
      await codeOf(hca.regMr({ pid: 1, addr: BASE, pages: 1, odp: true, access: ['read'] })),
    ).toBe('ESRCH');
  });

  it('dereg clears, unregisters with the last ODP MR, and a new ODP MR registers again', async () => {
    const { mm, hca, of } = setup();
    mm.map(0, 2, 'rw');
    const a = (await hca.regMr({ pid: 1, addr: BASE, pages: 2, odp: true, access: ['read'] })).mr;
    const b = (await hca.regMr({ pid: 1, addr: BASE, pages: 1, odp: true, access: ['read'] })).mr;
    await hca.rdma(a, page(1), 'read');
    expect(await hca.deregMr(a)).toEqual({ dereg: true });
    expect(of('smap.clear').map((e) => e.addr)).toEqual([page(1)]);
    expect(mm.calls).not.toContain('notifierUnregister');
    expect(await codeOf(hca.rdma(a, page(1), 'read'))).toBe('EINVAL');
    expect(await hca.deregMr(a)).toEqual({ dereg: false });
    expect(await hca.deregMr(b)).toEqual({ dereg: true });
    expect(mm.calls.filter((c) => c === 'notifierUnregister')).toHaveLength(1);
    // mm sends release during unregister; a later registration revives the mm
    await hca.notifier.release({ pid: 1, inv: 'r1', owner: 'x' });
    const c = (await hca.regMr({ pid: 1, addr: BASE, pages: 1, odp: true, access: ['read'] })).mr;
    expect(mm.calls.filter((x) => x === 'notifierRegister')).toHaveLength(2);
    expect((await hca.rdma(c, page(0), 'read')).npf).toBe(1);
  });

  it('a pinned registration waits for gup longer the bigger it is (ib_umem_get has no deadline)', async () => {
    const { hca, mm } = setup();
    mm.map(0, 6, 'rw');
    await hca.regMr({ pid: 1, addr: BASE, pages: 2, odp: false, access: ['read', 'write'] });
    await hca.regMr({ pid: 1, addr: page(2), pages: 4, odp: false, access: ['read'] });
    const [small, big] = mm.gupDeadlines;
    // beyond one fault's and one RPC's deadline, and growing with the pages
    expect(small).toBeGreaterThan(10_000 + 5_000);
    expect(big! - small!).toBe(2 * GUP_MS_PER_PAGE);
  });

  it('a pinned registration faults for write always, a read-only MR with force (ib_umem_get)', async () => {
    const { mm, hca } = setup();
    mm.map(0, 2, 'rw');
    await hca.regMr({ pid: 1, addr: BASE, pages: 2, odp: false, access: ['read'] });
    expect(mm.gupCalls).toEqual([{ addr: BASE, pages: 2, write: true, pin: true, force: true }]);
  });

  it('pinned MRs: ENOMEM passes through; dereg clears (and drains) before it unpins', async () => {
    const { mm, hca, events } = setup();
    mm.map(0, 8, 'rw');
    mm.freeFrames = 4;
    expect(
      await codeOf(
        hca.regMr({ pid: 1, addr: BASE, pages: 8, odp: false, access: ['read', 'write'] }),
      ),
    ).toBe('ENOMEM');
    const { mr } = await hca.regMr({
      pid: 1,
      addr: BASE,
      pages: 4,
      odp: false,
      access: ['read', 'write'],
    });
    expect((await hca.rdma(mr, page(3), 'write', 9)).npf).toBe(0);
    mm.unmapPage(page(3)); // the process lets go; the pin does not (not a subscriber: no callback)
    expect(await hca.rdma(mr, page(3), 'read')).toMatchObject({ value: 9, npf: 0 });
    const dma = hca.rdma(mr, page(2), 'read');
    await hca.deregMr(mr);
    await dma;
    const i = events.findIndex((e) => e.kind === 'smap.clear');
    expect(events.slice(i).filter((e) => e.kind === 'smap.clear')).toHaveLength(4);
    expect(mm.calls.at(-1)).toBe('unpin');
    expect(mm.calls).not.toContain('notifierRegister');
  });

  it('a fenced device has its DMA refused (access.refused, ENODEV)', async () => {
    const { mm, hca, of } = setup();
    mm.map(0, 1, 'rw');
    const { mr } = await hca.regMr({ pid: 1, addr: BASE, pages: 1, odp: true, access: ['read'] });
    mm.fenced.add('hca0');
    expect(await codeOf(hca.rdma(mr, page(0), 'read'))).toBe('ENODEV');
    expect(of('access.refused')).toMatchObject([{ agent: 'hca0', pid: 1, addr: page(0) }]);
    expect(of('access')).toHaveLength(0);
    await hca.start(); // a restarted device is a new device
    hca.stop();
    expect(await codeOf(hca.rdma(mr, page(0), 'read'))).toBe('ok');
  });

  it('gives up a fault with EAGAIN when its range stays under invalidation past the timeout', async () => {
    const { mm, hca, of } = setup({ MMLAB_NPF_TIMEOUT_MS: 100 });
    mm.map(0, 1, 'rw');
    const { mr } = await hca.regMr({ pid: 1, addr: BASE, pages: 1, odp: true, access: ['read'] });
    await hca.notifier.invalidateRangeStart(cb('stuck', page(0), page(1)));
    const t0 = Date.now();
    expect(await codeOf(hca.rdma(mr, page(0), 'read'))).toBe('EAGAIN');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(95);
    expect(of('npf.end')).toMatchObject([{ result: 'EAGAIN' }]);
    // 3.19 looks the page up first, then finds the count raised and waits for the completion
    expect(mm.gupCalls.length).toBeGreaterThan(0);
    expect(hca.mr(mr)?.mtt.size).toBe(0);
  });

  it('pairs start and end by range: a resent start is counted once, its end brings the count to 0', async () => {
    const { mm, hca } = setup({ MMLAB_NPF_TIMEOUT_MS: 100 });
    mm.map(0, 2, 'rw');
    const { mr } = await hca.regMr({ pid: 1, addr: BASE, pages: 2, odp: true, access: ['read'] });
    await hca.notifier.invalidateRangeStart(cb('inv1', page(0), page(2)));
    await hca.notifier.invalidateRangeStart(cb('inv1', page(0), page(2))); // mm's resend
    expect(hca.mr(mr)?.notifiers.notifiersCount).toBe(1);
    await hca.notifier.invalidateRangeEnd(cb('inv1', page(0), page(2)));
    expect(hca.mr(mr)?.notifiers.notifiersCount).toBe(0);
    expect(await hca.rdma(mr, page(1), 'read')).toMatchObject({ npf: 1 });
  });

  it("an end sent with another range (range-end-mismatch) leaves the device's faults stuck", async () => {
    const { mm, hca, of } = setup({ MMLAB_NPF_TIMEOUT_MS: 100 });
    mm.map(0, 8, 'rw');
    const a = (await hca.regMr({ pid: 1, addr: BASE, pages: 4, odp: true, access: ['read'] })).mr;
    const b = (await hca.regMr({ pid: 1, addr: page(4), pages: 4, odp: true, access: ['read'] }))
      .mr;
    // start [0, 4) raises A; its end comes shifted to [4, 8): it lowers B, never A
    await hca.notifier.invalidateRangeStart(cb('inv1', page(0), page(4)));
    await hca.notifier.invalidateRangeEnd(cb('inv1', page(4), page(8)));
    expect(hca.mr(a)?.notifiers.notifiersCount).toBe(1);
    expect(hca.mr(b)?.notifiers.notifiersCount).toBe(-1);
    // no invalidation is in progress, yet neither MR can fault a page in: EAGAIN for ever
    expect(await codeOf(hca.rdma(a, page(0), 'read'))).toBe('EAGAIN');
    expect(await codeOf(hca.rdma(b, page(4), 'read'))).toBe('EAGAIN');
    expect(of('smap.set')).toHaveLength(0);
  });

  it('an unmatched end makes a later invalidation unsafe: a fault maps inside it', async () => {
    const { mm, hca, events } = setup({ MMLAB_NPF_TIMEOUT_MS: 200 });
    mm.map(0, 8, 'rw');
    const b = (await hca.regMr({ pid: 1, addr: page(4), pages: 4, odp: true, access: ['read'] }))
      .mr;
    await hca.notifier.invalidateRangeStart(cb('inv1', page(0), page(4)));
    await hca.notifier.invalidateRangeEnd(cb('inv1', page(4), page(8))); // B: −1
    await hca.notifier.invalidateRangeStart(cb('inv2', page(4), page(8))); // B: 0, in progress
    await hca.rdma(b, page(5), 'read'); // ib_umem_mmu_notifier_retry says go: it installs
    await hca.notifier.invalidateRangeEnd(cb('inv2', page(4), page(8)));
    const kinds = events
      .filter((e) => e.kind === 'smap.set' || e.kind === 'mn.recv')
      .map((e) => (e.kind === 'mn.recv' ? `${e.callback} ${e.inv}` : e.kind));
    expect(kinds).toEqual([
      'invalidate_range_start inv1',
      'invalidate_range_end inv1',
      'invalidate_range_start inv2',
      'smap.set',
      'invalidate_range_end inv2',
    ]);
  });

  it('a umem registered during an invalidation has no private counters until the context is idle', async () => {
    const { mm, hca } = setup({ MMLAB_NPF_TIMEOUT_MS: 2000 });
    mm.map(0, 4, 'rw');
    await hca.regMr({ pid: 1, addr: BASE, pages: 2, odp: true, access: ['read'] });
    await hca.notifier.invalidateRangeStart(cb('inv1', page(0), page(4)));
    const late = (await hca.regMr({ pid: 1, addr: BASE, pages: 4, odp: true, access: ['read'] }))
      .mr;
    expect(hca.mr(late)?.mnCountersActive).toBe(false);
    let done = false;
    const fault = hca.rdma(late, page(3), 'read').then(() => (done = true));
    await sleep(30);
    expect(done).toBe(false); // waits: ib_umem_mmu_notifier_retry is true without counters
    await hca.notifier.invalidateRangeEnd(cb('inv1', page(0), page(4)));
    await fault;
    expect(hca.mr(late)?.mnCountersActive).toBe(true);
    expect(hca.mr(late)?.notifiers.notifiersCount).toBe(0); // the end did not count it down
  });
});

describe('hca: callback-level faults (subChaos)', () => {
  /** A callback as a request from mm: its result and what became of its reply. */
  const asRequest = async <T>(call: () => Promise<T>) => {
    const reply = new ReplyControl();
    const result = await runWithReply(reply, call);
    return { result, reply };
  };

  it('hang: the range is marked in the tick of mn.recv, the zap waits for the heal', async () => {
    const { mm, hca, of } = setup();
    mm.map(0, 2, 'rw');
    const { mr } = await hca.regMr({ pid: 1, addr: BASE, pages: 2, odp: true, access: ['read'] });
    await hca.rdma(mr, page(0), 'read');
    hca.subChaos({ faults: [{ fault: 'hang', callbacks: ['invalidate_range_start'] }] });
    let acked = false;
    const start = hca.notifier
      .invalidateRangeStart(cb('inv1', page(0), page(2)))
      .then(() => (acked = true));
    // a fault on page 1 finds the range active at once, though the zap has not begun
    let faulted = false;
    const fault = hca.rdma(mr, page(1), 'read').then(() => (faulted = true));
    await sleep(30);
    expect([acked, faulted]).toEqual([false, false]);
    expect(of('smap.clear')).toHaveLength(0);
    expect(of('sub.fault')).toMatchObject([
      { agent: 'hca0', callback: 'invalidate_range_start', inv: 'inv1', fault: 'hang' },
    ]);
    expect(hca.subChaos({ faults: [] })).toEqual({ active: [] });
    await start;
    expect(of('smap.clear').map((e) => e.addr)).toEqual([page(0)]);
    await hca.notifier.invalidateRangeEnd(cb('inv1', page(0), page(2)));
    await fault;
    expect(faulted).toBe(true);
  });

  it('drop-ack: the first reply of the inv is dropped, the resend is answered without redoing the work', async () => {
    const { mm, hca, of } = setup({ MMLAB_INVALIDATE_LATENCY: '10' });
    mm.map(0, 1, 'rw');
    const { mr } = await hca.regMr({ pid: 1, addr: BASE, pages: 1, odp: true, access: ['read'] });
    await hca.rdma(mr, page(0), 'read');
    hca.subChaos({ faults: [{ fault: 'drop-ack' }] });
    const first = await asRequest(() =>
      hca.notifier.invalidateRangeStart(cb('inv1', page(0), page(1))),
    );
    const resend = await asRequest(() =>
      hca.notifier.invalidateRangeStart(cb('inv1', page(0), page(1))),
    );
    expect([first.reply.isDropped, resend.reply.isDropped]).toEqual([true, false]);
    expect(resend.result).toEqual({ inv: 'inv1' });
    expect(of('smap.clear')).toHaveLength(1);
    expect(of('mn.recv')).toHaveLength(2);
    expect(of('sub.fault').map((e) => e.fault)).toEqual(['drop-ack']);
  });

  it('crash: the zap is done, the process killed before the ack (and before mn.done)', async () => {
    const { mm, hca, of } = setup();
    const killed: string[] = [];
    const dying = new Hca(hca.ctx, () => killed.push('SIGKILL'));
    mm.map(0, 1, 'rw');
    const { mr } = await dying.regMr({ pid: 1, addr: BASE, pages: 1, odp: true, access: ['read'] });
    await dying.rdma(mr, page(0), 'read');
    dying.subChaos({ faults: [{ fault: 'crash' }] });
    let acked = false;
    void dying.notifier
      .invalidateRangeStart(cb('inv1', page(0), page(1)))
      .then(() => (acked = true));
    await sleep(30);
    expect(killed).toEqual(['SIGKILL']);
    expect(acked).toBe(false);
    expect(of('smap.clear')).toHaveLength(1);
    expect(of('mn.done')).toHaveLength(0);
    expect(of('sub.fault').map((e) => e.fault)).toEqual(['crash']);
  });

  it('a heal does not lift a fence: only a restart does', async () => {
    const { mm, hca } = setup();
    mm.map(0, 1, 'rw');
    const { mr } = await hca.regMr({ pid: 1, addr: BASE, pages: 1, odp: true, access: ['read'] });
    await hca.rdma(mr, page(0), 'read');
    hca.subChaos({ faults: [{ fault: 'late-ack' }] });
    const late = await asRequest(() =>
      hca.notifier.invalidateRangeEnd(cb('inv9', page(0), page(1))),
    );
    let sent = false;
    const sending = late.reply.send(() => (sent = true));
    await sleep(30);
    expect(sent).toBe(false); // held: the lease is not renewed, mm has not fenced us yet
    mm.fenced.add('hca0'); // mm fences the zombie
    await sending;
    expect(sent).toBe(true);
    expect(hca.subChaos({ faults: [] })).toEqual({ active: [] });
    expect(mm.fenced.has('hca0')).toBe(true);
    expect(await codeOf(hca.rdma(mr, page(0), 'read'))).toBe('ENODEV');
    hca.stop();
  });

  it('a distribution that does not parse is EBADMSG and changes nothing', async () => {
    const { hca } = setup();
    hca.subChaos({ faults: [{ fault: 'dup-ack' }] });
    expect(
      await codeOf(
        Promise.resolve().then(() =>
          hca.subChaos({ faults: [{ fault: 'latency', distribution: 'normal:1e2:5' }] }),
        ),
      ),
    ).toBe('EBADMSG');
    expect(hca.faults.active).toEqual([{ fault: 'dup-ack' }]);
  });
});
