/**
 * KVM against real services: two mm replicas, two CPUs and three KVM instances as separate
 * processes — kvm-spin (mmu_lock held for a whole range zap, v3.7), kvm-sleep (a sleeping
 * lock, zapping in chunks) and kvm-gen (the O(1) generation teardown) — with a real
 * nats-server and redis-server. The guest and the host share memory through sPTEs and PTEs;
 * every mm change reaches the sPTEs through the notifier before mm frees a page. Then the
 * race the mmu_notifier_retry check exists for, forced by kvm-skip-retry's example (the
 * examples of examples/kvm/: kvm-examples.e2e-spec.ts).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { Document } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type EventOf,
  type MmuLockMode,
  PAGE_SIZE,
  type Req,
  type Res,
  type RpcName,
  type TraceKind,
} from '@mmlab/protocol';
import type { RpcClient } from '@mmlab/runtime';
import {
  type TestLab,
  type TraceLog,
  codeOf,
  runScenario,
  startTestLab,
  violatedInvariants,
} from '@mmlab/testing';
import {
  expectControlClean,
  expectInjectionCaught,
  withoutInjection,
} from './support/inject-checks';

const KVMS: Array<[string, MmuLockMode]> = [
  ['kvm-spin', 'spin'],
  ['kvm-sleep', 'sleep'],
  ['kvm-gen', 'generation'],
];

describe('KVM instances (spin, sleep, generation) against real services', () => {
  let t: TestLab | undefined;
  let rpc: RpcClient;
  let trace: TraceLog;

  beforeAll(async () => {
    t = await startTestLab(
      {
        mode: 'patched',
        frames: 96,
        cpus: 2,
        mmReplicas: 2,
        subscribers: KVMS.map(([name, mmuLock]) => ({ name, kind: 'kvm' as const, mmuLock })),
      },
      { rpcTimeoutMs: 20_000 },
    );
    ({ rpc, trace } = t);
  });
  afterAll(async () => {
    await t?.stop();
  });

  const kvmCall = <N extends RpcName>(kvm: string, name: N, req: Req<N>): Promise<Res<N>> =>
    rpc.call(name, req, { id: kvm });
  const cpuRead = async (cpu: number, pid: number, addr: number) =>
    (await rpc.call('cpuAccess', { pid, addr, op: 'read' }, { id: cpu })).value;
  const cpuWrite = (cpu: number, pid: number, addr: number, value: number) =>
    rpc.call('cpuAccess', { pid, addr, op: 'write', value }, { id: cpu });
  const events = <K extends TraceKind>(kind: K, pred: (e: EventOf<K>) => boolean = () => true) =>
    trace.events.filter((e): e is EventOf<K> => e.kind === kind && pred(e as EventOf<K>));
  /** A VMM with `pages` of guest RAM and a VM over it (gfn 0 = its first page). */
  const vmm = async (kvm: string, pages: number, vcpus = 2) => {
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages, prot: 'rw' });
    const { vm } = await kvmCall(kvm, 'kvmCreateVm', {
      pid,
      memslots: [{ gfn: 0, pages, addr }],
      vcpus,
    });
    return { pid, addr, vm, page: (i: number) => addr + i * PAGE_SIZE };
  };

  describe.each(KVMS)('%s (mmuLock %s)', (kvm) => {
    const gread = async (vm: number, vcpu: number, gfn: number) =>
      (await kvmCall(kvm, 'kvmGuestRead', { vm, vcpu, gfn })).value;
    const gwrite = (vm: number, vcpu: number, gfn: number, value: number) =>
      kvmCall(kvm, 'kvmGuestWrite', { vm, vcpu, gfn, value });

    it('a guest store is seen by a host CPU load, and the reverse; a second VM on the process too', async () => {
      const { pid, vm, page, addr } = await vmm(kvm, 4);
      const w = await gwrite(vm, 0, 1, 42);
      expect(w).toMatchObject({ faults: 1, stale: false });
      expect(await cpuRead(0, pid, page(1))).toBe(42);
      await cpuWrite(1, pid, page(2), 7);
      expect(await gread(vm, 1, 2)).toBe(7);
      expect(await gread(vm, 1, 3)).toBe(0); // untouched: the zero page, read-only
      // another VM of the same process maps host page 1 as its gfn 10
      const { vm: vm2 } = await kvmCall(kvm, 'kvmCreateVm', {
        pid,
        memslots: [{ gfn: 10, pages: 2, addr: page(1) }],
        vcpus: 1,
      });
      expect(await gread(vm2, 0, 10)).toBe(42);
      await gwrite(vm2, 0, 11, 8);
      expect(await gread(vm, 0, 2)).toBe(8);
      expect(await cpuRead(0, pid, addr + 2 * PAGE_SIZE)).toBe(8);
      expect(await kvmCall(kvm, 'kvmDestroyVm', { vm: vm2 })).toEqual({ destroyed: true });
      expect(await kvmCall(kvm, 'kvmDestroyVm', { vm })).toEqual({ destroyed: true });
      expect(await codeOf(gread(vm, 0, 1))).toBe('EINVAL');
    });

    it('fork of the VMM: the guest reads the COW page read-only; its write breaks COW on the host', async () => {
      const { pid, vm, page } = await vmm(kvm, 2);
      await gwrite(vm, 0, 0, 5);
      const { pid: child } = await rpc.call('fork', { pid });
      expect(await gread(vm, 0, 0)).toBe(5);
      const ro = (await t!.settled())
        .filter((e) => e.kind === 'smap.set' && e.agent === kvm && e.vm === vm && e.gfn === 0)
        .map((e) => e as EventOf<'smap.set'>)
        .at(-1);
      expect(ro?.writable).toBe(false); // fork write-protected the host PTE: a read-only sPTE
      const w = await gwrite(vm, 1, 0, 6);
      expect(w.faults).toBe(1);
      expect(w.pfn).not.toBe(ro?.pfn); // a copy: the child keeps the old frame
      expect(await cpuRead(0, pid, page(0))).toBe(6);
      expect(await cpuRead(1, child, page(0))).toBe(5);
      // a host COW (the parent's CPU write) after the guest's: the guest follows it
      const { pid: child2 } = await rpc.call('fork', { pid });
      await cpuWrite(0, pid, page(0), 9);
      expect(await gread(vm, 0, 0)).toBe(9);
      expect(await cpuRead(1, child2, page(0))).toBe(6);
      await kvmCall(kvm, 'kvmDestroyVm', { vm });
      for (const p of [pid, child, child2]) await rpc.call('exit', { pid: p });
    });

    it('munmap of guest memory: the sPTEs go before the frames; the next guest access fails cleanly', async () => {
      const { pid, vm, addr } = await vmm(kvm, 3);
      for (let g = 0; g < 3; g++) await gwrite(vm, g % 2, g, 100 + g);
      const frames = (await t!.settled())
        .filter((e) => e.kind === 'smap.set' && e.agent === kvm && e.vm === vm)
        .map((e) => e as EventOf<'smap.set'>);
      expect(frames.map((e) => e.gfn)).toEqual([0, 1, 2]);
      await rpc.call('munmap', { pid, addr, pages: 3 });
      expect(await codeOf(gread(vm, 0, 1))).toBe('EFAULT');
      expect(await codeOf(gwrite(vm, 1, 2, 1))).toBe('EFAULT');
      const all = await t!.settled();
      for (const { pfn, gen } of frames) {
        const free = all.find((e) => e.kind === 'frame.free' && e.pfn === pfn && e.gen === gen);
        const gone = all.find(
          (e) =>
            (e.kind === 'smap.clear' && e.agent === kvm && e.vm === vm && e.pfn === pfn) ||
            (e.kind === 'smap.flush' && e.agent === kvm && e.vm === vm),
        );
        expect(free, `pfn ${pfn} gen ${gen} freed`).toBeDefined();
        expect(gone, `pfn ${pfn} unmapped from ${kvm}`).toBeDefined();
        expect(gone!.ts).toBeLessThanOrEqual(free!.ts);
      }
      await kvmCall(kvm, 'kvmDestroyVm', { vm });
      await rpc.call('exit', { pid });
    });
  });

  it('bad requests: a typed error, nothing created', async () => {
    const { pid } = await rpc.call('processCreate', {});
    const overlapping = [
      { gfn: 0, pages: 4, addr: 0x10000000 },
      { gfn: 2, pages: 4, addr: 0x20000000 },
    ];
    expect(
      await codeOf(kvmCall('kvm-spin', 'kvmCreateVm', { pid, memslots: overlapping, vcpus: 1 })),
    ).toBe('EINVAL');
    expect(await codeOf(kvmCall('kvm-spin', 'kvmGuestRead', { vm: 999, vcpu: 0, gfn: 0 }))).toBe(
      'EINVAL',
    );
    const all = await t!.settled();
    expect(all.filter((e) => e.kind === 'mn.register' && e.pid === pid)).toEqual([]);
  });

  it('the whole trace satisfies every invariant', async () => {
    const all = await t!.settled();
    expect(violatedInvariants(all)).toEqual([]);
    for (const [kvm] of KVMS)
      expect(events('access', (e) => e.agent === kvm).length, kvm).toBeGreaterThan(10);
    expect(events('smap.flush', (e) => e.agent === 'kvm-gen').length).toBeGreaterThan(0);
  });
});

describe('the mmu_notifier_retry race (examples/inject/kvm-skip-retry.yaml), as mmlab run --local runs it', () => {
  const tmp = mkdtempSync(path.join(tmpdir(), 'mmlab-kvm-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));
  const run = (file: string, name: string, edit: (doc: Document) => void) =>
    runScenario(file, name, tmp, edit);

  // spin and generation: the two ways an invalidation reaches the sPTEs (a zap under
  // mmu_lock, a generation bump); spin is the example's own, which examples.e2e leaves to this
  // test (its checks of every injection example and of its control run here)
  it.each(['spin', 'generation'])(
    'the retry race, mmuLock %s: the fault retries; with kvm-skip-retry the checker catches the stale sPTE',
    async (mmuLock) => {
      const file = 'examples/inject/kvm-skip-retry.yaml';
      const control = await run(file, `kvm-retry-control-${mmuLock}`, (doc) => {
        doc.setIn(['config', 'subscribers', 0, 'mmuLock'], mmuLock);
        withoutInjection(doc);
      });
      expect(control.results.verdict, control.log).toBe('valid');
      expectControlClean(control);
      const ends = control.events.filter((e) => e.kind === 'kvm.fault.end');
      expect(ends[0], control.log).toMatchObject({ retries: 1, result: 'ok' });
      const injected = await run(file, `kvm-retry-inject-${mmuLock}`, (doc) =>
        doc.setIn(['config', 'subscribers', 0, 'mmuLock'], mmuLock),
      );
      expectInjectionCaught(injected, file);
      const broken = injected.results.invariants.filter((i) => !i.ok).map((i) => i.name);
      expect(broken.sort(), injected.log).toEqual([
        'coherent-reads',
        'no-map-during-invalidate',
        'no-stale-access',
        'teardown-before-free',
      ]);
      const ends2 = injected.events.filter((e) => e.kind === 'kvm.fault.end');
      expect(ends2[0], injected.log).toMatchObject({ retries: 0, result: 'ok' });
    },
  );
});
