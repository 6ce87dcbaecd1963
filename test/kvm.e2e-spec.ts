/**
 * KVM against real services: two mm replicas, two CPUs and three KVM instances as separate
 * processes — kvm-spin (mmu_lock held for a whole range zap, v3.7), kvm-sleep (a sleeping
 * lock, zapping in chunks) and kvm-gen (the O(1) generation teardown) — with a real
 * nats-server and redis-server. The guest and the host share memory through sPTEs and PTEs;
 * every mm change reaches the sPTEs through the notifier before mm frees a page. Then the
 * scenarios of examples/kvm/ and the kvm-skip-retry injection, as `mmlab run --local` runs
 * them.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { parseDocument } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type EventOf,
  type MmuLockMode,
  PAGE_SIZE,
  type Req,
  type Res,
  type RpcName,
  TraceEvent,
  type TraceKind,
} from '@mmlab/protocol';
import { checkInvariants } from '@mmlab/checker';
import type { RpcClient } from '@mmlab/runtime';
import { repoRoot } from '@mmlab/runner';
import { RunResults } from '@mmlab/scenario';
import { type TestLab, type TraceLog, codeOf, runMmlab, startTestLab } from '@mmlab/testing';

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
    const bad = checkInvariants(all, { softlockupMs: 1000 })
      .filter((v) => !v.ok)
      .map((v) => `${v.name}: ${v.violations.map((x) => x.message).join('; ')}`);
    expect(bad).toEqual([]);
    for (const [kvm] of KVMS)
      expect(events('access', (e) => e.agent === kvm).length, kvm).toBeGreaterThan(10);
    expect(events('smap.flush', (e) => e.agent === 'kvm-gen').length).toBeGreaterThan(0);
  });
});

describe('examples/kvm and the kvm-skip-retry injection, as mmlab run --local runs them', () => {
  const root = repoRoot();
  const tmp = mkdtempSync(path.join(tmpdir(), 'mmlab-kvm-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  /** Run file with its config changed by edit; the results and the trace. */
  async function run(
    file: string,
    name: string,
    edit: (doc: ReturnType<typeof parseDocument>) => void,
  ) {
    const doc = parseDocument(readFileSync(path.join(root, file), 'utf8'));
    edit(doc);
    doc.setIn(['name'], name);
    const yaml = path.join(tmp, `${name}.yaml`);
    writeFileSync(yaml, doc.toString());
    const out = path.join(tmp, name);
    const r = await runMmlab(['run', yaml, '--local', '--out', out]);
    const results = RunResults.parse(
      JSON.parse(readFileSync(path.join(out, 'results.json'), 'utf8')),
    );
    const events = readFileSync(path.join(out, 'trace.jsonl'), 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => TraceEvent.parse(JSON.parse(l)));
    return { code: r.code, results, events, log: r.stdout + r.stderr };
  }

  it.each([
    ['patched', 'spin'],
    ['legacy', 'spin'],
    ['patched', 'generation'],
  ])('guest-write-host-read.yaml in %s mode, mmuLock %s', async (mode, mmuLock) => {
    const { code, results, log } = await run(
      'examples/kvm/guest-write-host-read.yaml',
      `kvm-gwhr-${mode}-${mmuLock}`,
      (doc) => {
        doc.setIn(['config', 'mode'], mode);
        doc.setIn(['config', 'subscribers', 0, 'mmuLock'], mmuLock);
      },
    );
    expect(results.verdict, log).toBe('valid');
    expect(code).toBe(0);
    expect(results.steps.every((s) => s.ok)).toBe(true);
  });

  type Ev = TraceEvent;
  /** The first index of an event matching pred after index `from`. */
  const find = (evs: Ev[], pred: (e: Ev) => boolean, from = -1) =>
    evs.findIndex((e, i) => i > from && pred(e));
  /**
   * The callbacks kvm0 got from op (mm's): each as [mn.send, its mn.recv, mn.done, mn.ack]
   * indexes in trace order, with what it sent.
   */
  const callbacksOf = (evs: Ev[], op: string) =>
    evs.flatMap((e, i) => {
      if (e.kind !== 'mn.send' || e.subscriber !== 'kvm0' || e.op !== op || e.attempt !== 1)
        return [];
      // a range's start and end share their inv: the callback tells them apart
      const { inv, callback } = e;
      const of = (x: Ev) =>
        'inv' in x && x.inv === inv && 'callback' in x && x.callback === callback;
      // (kvm0's events may sort before mm's send: two processes' clocks and trace batches)
      const recv = find(evs, (x) => x.kind === 'mn.recv' && x.agent === 'kvm0' && of(x));
      const done = find(evs, (x) => x.kind === 'mn.done' && x.agent === 'kvm0' && of(x), recv);
      const ack = find(evs, (x) => x.kind === 'mn.ack' && x.subscriber === 'kvm0' && of(x));
      expect(recv, `kvm0 received ${callback} ${inv}`).toBeGreaterThanOrEqual(0);
      expect(done, `kvm0 finished ${callback} ${inv}`).toBeGreaterThan(recv);
      // kvm0's own op for the callback: what its handler traced carries it
      const kop = evs[recv].op;
      /** what kvm0's handler of this callback traced, between its mn.recv and mn.done */
      const work = evs.slice(recv, done + 1).filter((x) => x.op === kop);
      return [{ callback: e.callback, ptl: e.ptl, send: i, recv, done, ack, work }];
    });
  /** The op of the host CPU store that broke COW on page 0 (do_wp_page of a fault by cpu). */
  const cowOp = (evs: Ev[], cpu: string, addr: number) => {
    const begin = evs.find(
      (e) =>
        e.kind === 'fault.begin' &&
        e.agent === cpu &&
        e.addr === addr &&
        e.access === 'write' &&
        evs.some((x) => x.kind === 'mn.send' && x.op === e.op),
    );
    if (!begin || begin.kind !== 'fault.begin' || !begin.op) throw new Error('no COW fault');
    return begin.op;
  };
  const ramOf = (evs: Ev[]) => {
    const m = evs.find((e) => e.kind === 'vma.map');
    if (!m || m.kind !== 'vma.map') throw new Error('no mmap');
    return m.start;
  };

  const MODES = ['patched', 'legacy'] as const;
  /** What each example shows besides ending valid, per mode. */
  const shows: Record<string, (r: { events: Ev[]; results: RunResults }, mode: string) => void> = {
    'fork-cow': ({ events }, mode) => {
      // the parent's COW of page 0: what kvm0 got, and where its sPTE of gfn 0 went
      const op = cowOp(events, 'cpu0', ramOf(events));
      const cbs = callbacksOf(events, op);
      if (mode === 'patched') {
        // v3.7: range start/end outside the PT lock (6bdb913f), change_pte under it
        expect(cbs.map((c) => [c.callback, c.ptl === null])).toEqual([
          ['invalidate_range_start', true],
          ['change_pte', false],
          ['invalidate_range_end', true],
        ]);
      } else {
        // v3.6: set_pte_at_notify under the PT lock sends change_pte, nothing else
        expect(cbs.map((c) => c.callback)).toEqual(['change_pte']);
        expect(cbs[0].ptl).toMatch(/^ptl:/);
      }
      // the sPTE of the shared page left kvm0 inside one of those callbacks
      const cleared = cbs.filter((c) =>
        c.work.some((e) => e.kind === 'smap.clear' && e.agent === 'kvm0' && e.gfn === 0),
      );
      expect(cleared.map((c) => c.callback)).toEqual([
        mode === 'patched' ? 'invalidate_range_start' : 'change_pte',
      ]);
    },
    'munmap-mremap': ({ events }) => {
      // every frame an sPTE mapped was unmapped from kvm0 before mm freed it
      let freed = 0;
      events.forEach((set, i) => {
        if (set.kind !== 'smap.set' || set.agent !== 'kvm0') return;
        const free = find(
          events,
          (e) => e.kind === 'frame.free' && e.pfn === set.pfn && e.gen === set.gen,
          i,
        );
        if (free < 0) return;
        freed++;
        const gone = find(
          events,
          (e) =>
            e.kind === 'smap.clear' && e.agent === 'kvm0' && e.pfn === set.pfn && e.gen === set.gen,
          i,
        );
        expect(gone, `pfn ${set.pfn} unmapped before it was freed`).toBeGreaterThanOrEqual(0);
        // two processes' events: by their timestamps (trace.jsonl is in arrival order)
        expect(events[gone].ts).toBeLessThanOrEqual(events[free].ts);
      });
      expect(freed).toBeGreaterThan(0); // the munmapped page's frame at least
      expect(events.filter((e) => e.kind === 'vma.move')).toHaveLength(1);
    },
    'two-vms': ({ events, results }) => {
      // the madvise of the shared page zapped both VMs' sPTEs of it
      const madvise = events.find((e) => e.kind === 'madvise');
      const op = madvise && 'op' in madvise ? madvise.op : undefined;
      const zapped = callbacksOf(events, op!)
        .filter((c) => c.callback === 'invalidate_range_start')
        .flatMap((c) => c.work.flatMap((e) => (e.kind === 'smap.clear' ? [[e.vm, e.gfn]] : [])));
      expect(zapped.sort()).toEqual([
        [1, 2],
        [2, 100],
      ]);
      const w = results.workloads?.find((x) => x.name === 'vm1-private');
      expect(w).toMatchObject({ kind: 'kvm', ops: 200, impossibleReads: 0, unexpected: 0 });
      expect(w!.faults).toBeGreaterThan(0);
    },
  };

  it.each(Object.keys(shows).flatMap((f) => MODES.map((m) => [f, m])))(
    'examples/kvm/%s.yaml in %s mode',
    async (file, mode) => {
      const r = await run(`examples/kvm/${file}.yaml`, `kvm-${file}-${mode}`, (doc) =>
        doc.setIn(['config', 'mode'], mode),
      );
      expect(r.results.verdict, r.log).toBe('valid');
      expect(r.code).toBe(0);
      expect(r.results.steps.every((s) => s.ok)).toBe(true);
      shows[file](r, mode);
    },
  );

  /** Faults of CPUs 0..3 (the neighbours) that began after index a and ended ok before b. */
  const neighbourFaultsWithin = (evs: Ev[], a: number, b: number) => {
    const began = new Map<string, number>();
    let n = 0;
    evs.forEach((e, i) => {
      if (e.kind === 'fault.begin' && /^cpu[0-3]$/.test(e.agent) && e.op) began.set(e.op, i);
      if (
        e.kind === 'fault.end' &&
        e.result === 'ok' &&
        e.op &&
        i < b &&
        (began.get(e.op) ?? -1) > a
      )
        n++;
    });
    return n;
  };

  it("examples/kvm/slow-kvm.yaml, patched: the neighbours keep faulting while kvm0 sleeps 1 s in the COW's invalidate_range_start", async () => {
    const { results, events, log } = await run(
      'examples/kvm/slow-kvm.yaml',
      'kvm-slow-patched',
      (doc) => doc.setIn(['config', 'mode'], 'patched'),
    );
    expect(results.verdict, log).toBe('valid');
    expect(results.workloads?.[0]).toMatchObject({ name: 'neighbours', impossibleReads: 0 });
    const cbs = callbacksOf(events, cowOp(events, 'cpu4', ramOf(events)));
    expect(cbs.map((c) => c.callback)).toEqual([
      'invalidate_range_start',
      'change_pte',
      'invalidate_range_end',
    ]);
    const [start] = cbs;
    // sent with no PT lock held; other CPUs' faults on the same page table complete meanwhile
    expect(start.ptl).toBeNull();
    expect(neighbourFaultsWithin(events, start.send, start.ack), log).toBeGreaterThan(0);
    expect(events.some((e) => e.kind === 'might_sleep')).toBe(false);
    // kvm0 found a PT lock held only by change_pte's sender (v3.7 sends it under the lock)
    const held = events.flatMap((e) => (e.kind === 'mn.ptl_held' ? [e.callback] : []));
    expect(new Set(held)).toEqual(new Set(['change_pte']));
  });

  it('examples/kvm/slow-kvm.yaml, legacy: v3.6 sends the slow KVM only change_pte, under the PT lock; it drops the sPTE without sleeping', async () => {
    const { results, events, log } = await run(
      'examples/kvm/slow-kvm.yaml',
      'kvm-slow-legacy',
      (doc) => doc.setIn(['config', 'mode'], 'legacy'),
    );
    expect(results.verdict, log).toBe('valid');
    const op = cowOp(events, 'cpu4', ramOf(events));
    const cbs = callbacksOf(events, op);
    // nothing sleepable: no range, no invalidate_page (kvm0 has change_pte)
    expect(cbs.map((c) => c.callback)).toEqual(['change_pte']);
    const [c] = cbs;
    expect(c.ptl).toMatch(/^ptl:/);
    // answered under the lock: the ack precedes the COW's unlock of that lock
    const unlock = find(
      events,
      (e) => e.kind === 'ptl.release' && e.op === op && e.lock === c.ptl,
      c.send,
    );
    expect(c.ack).toBeGreaterThan(c.send);
    expect(unlock).toBeGreaterThan(c.ack);
    // kvm_set_pte_rmapp: the new PTE is writable, so the sPTE of gfn 0 is dropped, not switched
    const { work } = c;
    expect(work.filter((e) => e.kind === 'smap.clear').map((e) => 'gfn' in e && e.gfn)).toEqual([
      0,
    ]);
    expect(work.some((e) => e.kind === 'smap.set')).toBe(false);
    expect(work.filter((e) => e.kind === 'kvm.mmu_lock').map((e) => 'what' in e && e.what)).toEqual(
      ['change_pte'],
    );
    // and the guest refaulted onto the copy (its read of 2 is a step that passed)
    expect(results.steps.every((s) => s.ok)).toBe(true);
  });

  it.each(['spin', 'sleep', 'generation'])(
    'the retry race, mmuLock %s: the fault retries; with kvm-skip-retry the checker catches the stale sPTE',
    async (mmuLock) => {
      const file = 'examples/inject/kvm-skip-retry.yaml';
      const control = await run(file, `kvm-retry-control-${mmuLock}`, (doc) => {
        doc.setIn(['config', 'subscribers', 0, 'mmuLock'], mmuLock);
        doc.deleteIn(['config', 'inject']);
        doc.setIn(['expect', 'violations'], doc.createNode([]));
      });
      expect(control.results.verdict, control.log).toBe('valid');
      const ends = control.events.filter((e) => e.kind === 'kvm.fault.end');
      expect(ends[0], control.log).toMatchObject({ retries: 1, result: 'ok' });
      const injected = await run(file, `kvm-retry-inject-${mmuLock}`, (doc) =>
        doc.setIn(['config', 'subscribers', 0, 'mmuLock'], mmuLock),
      );
      expect(injected.results.verdict, injected.log).toBe('valid');
      expect(injected.code).toBe(0);
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
