/**
 * The KVM model against an in-memory stand-in for mm and Redis (the real ones are in
 * test/kvm.e2e-spec.ts): guest faults, the mmu_notifier_retry race, the three mmu_lock modes,
 * the young and change_pte callbacks, driven directly.
 */
import { describe, expect, it } from 'vitest';
import {
  type Access,
  type GupPage,
  MmlabError,
  type MmuLockMode,
  PAGE_SIZE,
  type TraceEvent,
  type TraceKind,
  vpnOf,
} from '@mmlab/protocol';
import { Tracer, sleep } from '@mmlab/runtime';
import { type KvmEnv, type KvmRpc, type KvmStore, createContext } from './context';
import { Kvm } from './kvm';
import { ZAP_CHUNK } from './mmu_lock';

const BASE = 0x10000000;
const page = (i: number) => BASE + i * PAGE_SIZE;

/** Frames, one process's PTEs (all rw), gup and the notifier registry: just enough mm. */
class FakeMm {
  ptes = new Map<number, { pfn: number; gen: number; writable: boolean }>();
  readOnly = new Set<number>(); // vpns mapped read-only
  unmapped = new Set<number>();
  frames = new Map<number, { gen: number; state: string; data: number }>([
    [0, { gen: 1, state: 'zero', data: 0 }],
  ]);
  registered = new Map<number, number>(); // pid → registrations
  calls: string[] = [];
  private nextPfn = 1;

  newFrame(): number {
    const pfn = this.nextPfn++;
    this.frames.set(pfn, { gen: 1, state: 'used', data: 0 });
    return pfn;
  }

  gup(addr: number, write: boolean): GupPage {
    const vpn = vpnOf(addr);
    if (this.unmapped.has(vpn)) throw new MmlabError('EFAULT', 'unmapped');
    if (write && this.readOnly.has(vpn)) throw new MmlabError('EFAULT', 'read-only');
    let pte = this.ptes.get(vpn);
    if (!pte || (write && !pte.writable)) {
      pte = write
        ? { pfn: this.newFrame(), gen: 1, writable: true }
        : { pfn: 0, gen: 1, writable: false };
      this.ptes.set(vpn, pte);
    }
    return { addr, ...pte };
  }

  /** munmap of one page: the PTE goes, the frame is freed. */
  unmapPage(addr: number): void {
    const vpn = vpnOf(addr);
    const pte = this.ptes.get(vpn);
    this.ptes.delete(vpn);
    this.unmapped.add(vpn);
    if (pte && pte.pfn !== 0) this.frames.get(pte.pfn)!.state = 'free';
  }

  readonly store: KvmStore = {
    frameAccess: async (pfn: number, op: Access, value: number | undefined) => {
      await sleep(1);
      const f = this.frames.get(pfn);
      if (!f) return null;
      if (op === 'write') f.data = value ?? 0;
      return { gen: f.gen, state: f.state, value: f.data };
    },
    ptlHeldBy: async () => null,
    subscriberAlive: async () => {},
    livenessDrop: async () => {},
    unfence: async () => {},
    isFenced: async () => false,
  };

  readonly rpc = {
    call: async (name: string, req: Record<string, unknown>) => {
      this.calls.push(name);
      await sleep(1);
      const pid = req.pid as number;
      switch (name) {
        case 'gup':
          return { pages: [this.gup(req.addr as number, req.write as boolean)] };
        case 'notifierRegister':
          this.registered.set(pid, (this.registered.get(pid) ?? 0) + 1);
          return { registered: true };
        case 'notifierUnregister':
          this.registered.set(pid, (this.registered.get(pid) ?? 0) - 1);
          return { unregistered: true };
        default:
          throw new Error(`unexpected ${name}`);
      }
    },
  } as unknown as KvmRpc;
}

function setup(env: Partial<KvmEnv> = {}) {
  const mm = new FakeMm();
  const tracer = new Tracer(null, 'kvm', 'kvm0');
  const events: TraceEvent[] = [];
  tracer.tap((e) => events.push(e));
  const kvm = new Kvm(
    createContext({
      name: 'kvm0',
      store: mm.store,
      rpc: mm.rpc,
      tracer,
      env: {
        MMLAB_INVALIDATE_LATENCY: '0',
        MMLAB_NPF_DELAY_MS: 0,
        MMLAB_SUBSCRIBER_LEASE_MS: 3000,
        MMLAB_SEED: 1,
        MMLAB_INJECT: [],
        MMLAB_FAULT_DEADLINE_MS: 10_000,
        MMLAB_RPC_TIMEOUT_MS: 5_000,
        MMLAB_MMU_LOCK: 'spin',
        MMLAB_KVM_CRASH_POINT: '',
        ...env,
      },
      log: { warn: () => {} },
    }),
  );
  const of = <K extends TraceKind>(kind: K) =>
    events.filter((e): e is Extract<TraceEvent, { kind: K }> => e.kind === kind);
  return { mm, kvm, events, of };
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

const vmOn = async (kvm: Kvm, pages: number, vcpus = 2) =>
  (await kvm.createVm({ pid: 1, memslots: [{ gfn: 0, pages, addr: BASE }], vcpus })).vm;

describe('kvm: VMs, guest faults and accesses', () => {
  it('a read maps the host page read-only; a write faults again with write; hits go through the TLB', async () => {
    const { mm, kvm, of } = setup();
    const vm = await vmOn(kvm, 4);
    const r = await kvm.guestAccess(vm, 0, 2, 'read');
    expect(r).toMatchObject({ value: 0, pfn: 0, faults: 1, tlbHit: false });
    expect(kvm.vm(vm)!.sptes.get(2)).toMatchObject({ pfn: 0, writable: false });
    const w = await kvm.guestAccess(vm, 0, 2, 'write', 9);
    expect(w).toMatchObject({ faults: 1, tlbHit: false, stale: false });
    expect(w.pfn).not.toBe(0);
    expect(kvm.vm(vm)!.sptes.get(2)).toMatchObject({ pfn: w.pfn, writable: true });
    expect(await kvm.guestAccess(vm, 0, 2, 'read')).toMatchObject({
      value: 9,
      tlbHit: true,
      faults: 0,
    });
    // vcpu1 has no TLB entry yet: it walks the sPTE, no fault
    expect(await kvm.guestAccess(vm, 1, 2, 'read')).toMatchObject({
      value: 9,
      tlbHit: false,
      faults: 0,
    });
    expect(mm.frames.get(w.pfn)!.data).toBe(9);
    expect(of('smap.set').map((e) => [e.vm, e.gfn, e.addr, e.writable])).toEqual([
      [vm, 2, page(2), false],
      [vm, 2, page(2), true],
    ]);
    expect(of('smap.clear')).toHaveLength(1); // the read-only zero-page entry it replaced
  });

  it('refuses bad input with a typed error and changes nothing', async () => {
    const { mm, kvm } = setup();
    const overlapping = [
      { gfn: 0, pages: 4, addr: BASE },
      { gfn: 2, pages: 4, addr: page(8) },
    ];
    expect(await codeOf(kvm.createVm({ pid: 1, memslots: overlapping, vcpus: 1 }))).toBe('EINVAL');
    expect(mm.calls).toEqual([]); // nothing registered
    const vm = await vmOn(kvm, 4);
    expect(await codeOf(kvm.guestAccess(vm, 5, 0, 'read'))).toBe('EINVAL');
    expect(await codeOf(kvm.guestAccess(vm, 0, 4, 'read'))).toBe('EFAULT'); // no memslot
    expect(await codeOf(kvm.guestAccess(99, 0, 0, 'read'))).toBe('EINVAL');
    mm.readOnly.add(vpnOf(page(1)));
    expect(await codeOf(kvm.guestAccess(vm, 0, 1, 'write', 1))).toBe('EFAULT');
    expect(kvm.vm(vm)!.sptes.validCount).toBe(0);
  });

  it('registers once per process, for every VM there; the last destroy unregisters', async () => {
    const { mm, kvm, of } = setup();
    const a = await vmOn(kvm, 4);
    const b = await vmOn(kvm, 4);
    expect(mm.registered.get(1)).toBe(1);
    await kvm.guestAccess(a, 0, 0, 'write', 1);
    await kvm.guestAccess(b, 0, 0, 'read');
    // one invalidation reaches both VMs (they map the same host page)
    await kvm.notifier.invalidateRangeStart(cb('i1', page(0), page(1)));
    expect(of('smap.clear').map((e) => e.vm)).toEqual([a, b]);
    await kvm.notifier.invalidateRangeEnd(cb('i1', page(0), page(1)));
    expect(await kvm.destroyVm(a)).toEqual({ destroyed: true });
    expect(mm.registered.get(1)).toBe(1);
    expect(await kvm.destroyVm(b)).toEqual({ destroyed: true });
    expect(mm.registered.get(1)).toBe(0);
    expect(await kvm.destroyVm(b)).toEqual({ destroyed: false });
    expect(await codeOf(kvm.guestAccess(a, 0, 0, 'read'))).toBe('EINVAL');
  });
});

describe('kvm: mmu_notifier_retry (tdp_page_fault)', () => {
  /**
   * A guest read whose fault resolved its page (kvm.fault.delay: the test hook) when an
   * munmap's invalidate_range_start arrives; the page is then unmapped and the range ends.
   */
  async function race(inject: KvmEnv['MMLAB_INJECT']) {
    const t = setup({ MMLAB_NPF_DELAY_MS: 2000, MMLAB_INJECT: inject });
    const { mm, kvm, of } = t;
    const vm = await vmOn(kvm, 2);
    mm.gup(page(0), true); // the host wrote the page: a real frame
    const pfn = mm.ptes.get(vpnOf(page(0)))!.pfn;
    const read = kvm.guestAccess(vm, 0, 0, 'read').then(
      (r) => ({ ok: true as const, r }),
      (e: unknown) => ({ ok: false as const, code: MmlabError.wrap(e).code }),
    );
    while (of('kvm.fault.delay').length === 0) await sleep(1);
    const start = kvm.notifier.invalidateRangeStart(cb('i1', page(0), page(1)));
    await start;
    mm.unmapPage(page(0));
    await sleep(20);
    await kvm.notifier.invalidateRangeEnd(cb('i1', page(0), page(1)));
    return { ...t, vm, pfn, result: await read };
  }

  it('an invalidation between the page lookup and the re-check makes the fault retry', async () => {
    const { result, of } = await race([]);
    expect(result).toEqual({ ok: false, code: 'EFAULT' }); // the page is gone by the retry
    expect(of('kvm.fault.end')).toMatchObject([{ retries: 1, result: 'EFAULT' }]);
    expect(of('smap.set')).toEqual([]);
  });

  it('kvm-skip-retry installs the stale page inside the invalidation and keeps it', async () => {
    const { result, of, kvm, vm, pfn } = await race(['kvm-skip-retry']);
    expect(result).toMatchObject({ ok: true });
    const set = of('smap.set');
    const recv = of('mn.recv').find((e) => e.callback === 'invalidate_range_start')!;
    expect(set).toMatchObject([{ pfn, gfn: 0 }]);
    expect(set[0].ts).toBeGreaterThan(recv.ts);
    // the sPTE outlived the zap: the next access goes to the freed frame
    expect(await kvm.guestAccess(vm, 1, 0, 'read')).toMatchObject({ pfn, stale: true });
  });
});

describe('kvm: mmu_lock spin, sleep, generation', () => {
  const PAGES = 5 * ZAP_CHUNK;
  async function zapAll(mode: MmuLockMode) {
    const t = setup({ MMLAB_MMU_LOCK: mode });
    const vm = await vmOn(t.kvm, PAGES);
    for (let g = 0; g < PAGES; g++) await t.kvm.guestAccess(vm, g % 2, g, 'write', g);
    t.events.length = 0;
    await t.kvm.notifier.invalidateRangeStart(cb('i1', page(0), page(PAGES)));
    const v = t.kvm.vm(vm)!;
    expect(v.sptes.validCount).toBe(0);
    expect(v.vcpus.map((c) => c.tlb.size)).toEqual([0, 0]);
    const zapHolds = t.of('kvm.mmu_lock').filter((e) => e.what === 'zap');
    return { ...t, vm, v, zapHolds };
  }

  it('spin: one hold zaps the whole range (v3.7)', async () => {
    const { zapHolds, of } = await zapAll('spin');
    expect(zapHolds.map((h) => h.zapped)).toEqual([PAGES]);
    expect(of('smap.clear')).toHaveLength(PAGES);
  });

  it('sleep: chunks of ZAP_CHUNK sPTEs, one hold each', async () => {
    const { zapHolds, of } = await zapAll('sleep');
    expect(zapHolds.map((h) => h.zapped)).toEqual([
      ZAP_CHUNK,
      ZAP_CHUNK,
      ZAP_CHUNK,
      ZAP_CHUNK,
      ZAP_CHUNK,
    ]);
    expect(of('smap.clear')).toHaveLength(PAGES);
  });

  it('generation: one O(1) hold, one smap.flush, the old sPTEs reclaimed later; a guest access faults again', async () => {
    const { zapHolds, of, kvm, vm, v } = await zapAll('generation');
    expect(zapHolds.map((h) => h.zapped)).toEqual([PAGES]);
    expect(of('smap.clear')).toEqual([]);
    expect(of('smap.flush')).toMatchObject([{ vm, entries: PAGES }]);
    await kvm.notifier.invalidateRangeEnd(cb('i1', page(0), page(PAGES)));
    const r = await kvm.guestAccess(vm, 0, 7, 'read');
    expect(r).toMatchObject({ value: 7, faults: 1 });
    while (v.sptes.staleCount > 0) await sleep(1);
    expect(v.sptes.size).toBe(1);
  });

  it('a fault elsewhere in the VM retries until the invalidation ends (v3.7: one count per VM)', async () => {
    const { kvm, vm, of } = await zapAll('sleep');
    const read = kvm.guestAccess(vm, 0, 3, 'read');
    await sleep(30);
    expect(of('kvm.fault.end')).toEqual([]);
    await kvm.notifier.invalidateRangeEnd(cb('i1', page(0), page(PAGES)));
    expect(await read).toMatchObject({ value: 3, faults: 1 });
    expect(of('kvm.fault.end')).toMatchObject([{ retries: 1, result: 'ok' }]);
  });
});

describe('kvm: young and change_pte callbacks', () => {
  it('clear_flush_young reports and clears accessed bits; the next access walks and sets them', async () => {
    const { kvm } = setup();
    const vm = await vmOn(kvm, 4);
    await kvm.guestAccess(vm, 0, 1, 'write', 5);
    const young = { pid: 1, inv: 'y1', owner: 'mm-0/x', start: page(0), end: page(4) };
    expect(await kvm.notifier.clearFlushYoung(young)).toEqual({ inv: 'y1', young: true });
    expect(await kvm.notifier.clearFlushYoung({ ...young, inv: 'y2' })).toMatchObject({
      young: false,
    });
    const test = { pid: 1, inv: 't1', owner: 'mm-0/x', addr: page(1) };
    expect(await kvm.notifier.testYoung(test)).toMatchObject({ young: false });
    expect(await kvm.guestAccess(vm, 0, 1, 'read')).toMatchObject({ tlbHit: false, faults: 0 });
    expect(await kvm.notifier.testYoung({ ...test, inv: 't2' })).toMatchObject({ young: true });
  });

  it('change_pte to a read-only PTE (KSM) switches the sPTE to the new frame, read-only (kvm_set_pte_rmapp)', async () => {
    const { kvm, mm, of } = setup();
    const vm = await vmOn(kvm, 4);
    await kvm.guestAccess(vm, 0, 1, 'write', 5);
    const fresh = mm.newFrame();
    mm.frames.get(fresh)!.data = 5;
    await kvm.notifier.changePte({
      pid: 1,
      inv: 'c1',
      owner: 'mm-0/x',
      addr: page(1),
      pfn: fresh,
      gen: 1,
      writable: false,
    });
    expect(kvm.vm(vm)!.sptes.get(1)).toMatchObject({ pfn: fresh, writable: false });
    expect(of('smap.set').at(-1)).toMatchObject({ pfn: fresh, writable: false, gfn: 1 });
    expect(await kvm.guestAccess(vm, 0, 1, 'read')).toMatchObject({
      pfn: fresh,
      value: 5,
      faults: 0,
    });
    // a write faults with write now
    expect(await kvm.guestAccess(vm, 0, 1, 'write', 6)).toMatchObject({ faults: 1 });
  });

  it('change_pte to a writable PTE (a COW) drops the sPTE: the guest refaults onto the copy (kvm_set_pte_rmapp)', async () => {
    const { kvm, mm, of } = setup();
    const vm = await vmOn(kvm, 4);
    const before = await kvm.guestAccess(vm, 0, 1, 'write', 5);
    const fresh = mm.newFrame();
    await kvm.notifier.changePte({
      pid: 1,
      inv: 'c2',
      owner: 'mm-0/x',
      addr: page(1),
      pfn: fresh,
      gen: 1,
      writable: true,
    });
    expect(kvm.vm(vm)!.sptes.get(1)).toBeUndefined();
    expect(of('smap.clear').at(-1)).toMatchObject({ pfn: before.pfn, gfn: 1, vm });
    expect(of('smap.set').some((e) => e.pfn === fresh)).toBe(false);
    expect(of('kvm.mmu_lock').at(-1)).toMatchObject({ what: 'change_pte', zapped: 1 });
    // the next access faults (the sPTE and every vCPU's cached translation are gone)
    expect(await kvm.guestAccess(vm, 0, 1, 'read')).toMatchObject({ faults: 1 });
  });

  it('a slow KVM sleeps in invalidate_range_start, never in change_pte (it comes under the PT lock)', async () => {
    const { kvm } = setup({ MMLAB_INVALIDATE_LATENCY: '600000' }); // 10 minutes a callback
    const vm = await vmOn(kvm, 4);
    await kvm.guestAccess(vm, 0, 1, 'write', 5);
    let startAcked = false;
    void kvm.notifier
      .invalidateRangeStart(cb('slow', page(2), page(3)))
      .then(() => (startAcked = true));
    // answered while the range_start above is still asleep (were change_pte to sleep too,
    // this would hang for 10 minutes and the test time out)
    await kvm.notifier.changePte({
      pid: 1,
      inv: 'c3',
      owner: 'mm-0/fault#1',
      addr: page(1),
      pfn: 0,
      gen: 1,
      writable: true,
    });
    expect(startAcked).toBe(false);
    expect(kvm.vm(vm)!.sptes.get(1)).toBeUndefined();
  });
});
