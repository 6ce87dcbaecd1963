/**
 * mmu-lock: KVM's mmu_lock three ways (apps/kvm/src/mmu_lock.ts) on the teardown of a large
 * guest range. A VM maps `pages` guest frames (read faults: each sPTE maps the host zero page,
 * so no frame is allocated), then the VMM munmaps them all at once: mm sends one
 * invalidate_range_start over the range (zap_page_range, v3.7), and KVM zaps its sPTEs under
 * mmu_lock as its mode says:
 *
 *   spin        v3.7: one hold for the whole zap and the vCPU flush (grows with the range)
 *   sleep       a sleeping lock with cond_resched_lock() every ZAP_CHUNK sPTEs
 *   generation  ++mmu_valid_gen in O(1) (v3.11's zap-all, used for notifier ranges: the lab's
 *               extension); the stale sPTEs are reclaimed later in batches
 *
 * While the munmap runs, two vCPUs keep working on another part of the same VM: vCPU 1 loads
 * frames it mapped before (hits, unless the teardown invalidated them), vCPU 0 faults fresh
 * frames in (each access a guest fault: tdp_page_fault through mm). The same two loops run for
 * a while just before, with no teardown: the idle baseline of the same VM in the same run.
 *
 * Every timing is a ratio against that baseline: the longest mmu_lock hold during the teardown
 * over the idle fault's hold (p50), and the vCPUs' p99 during over their idle p99. Holds come
 * from the kvm.mmu_lock trace events; latencies are measured by the bench around each request.
 * v3.7's mmu_notifier_count is per VM, not per range (mmu_notifier_retry): a fault anywhere in
 * the VM retries until the range's end, whatever the lock, so the fault p99 during the teardown
 * follows mm's munmap time in every mode; what the lock mode changes is how long the instance
 * is stopped (spin) and whether the untouched sPTEs survive (generation drops them all).
 */
import { performance } from 'node:perf_hooks';
import { type EventOf, type MmuLockMode } from '@mmlab/protocol';
import type { RpcClient } from '@mmlab/runtime';
import { type TestLab, startTestLab } from '@mmlab/testing';
import { type BenchResult, type Benchmark, type Row, pct, round, sleepMs } from '../lib/harness';
import { linePlot } from '../lib/plot';

const KVMS: Array<[string, MmuLockMode]> = [
  ['kvm-spin', 'spin'],
  ['kvm-sleep', 'sleep'],
  ['kvm-gen', 'generation'],
];

interface Sizes {
  /** the teardown sizes (guest frames munmapped at once) */
  ranges: number[];
  /** frames vCPU 1 keeps loading (mapped before) */
  hot: number;
  /** fresh frames vCPU 0 may fault in, per phase */
  fresh: number;
  /** the idle phase's length */
  idleMs: number;
  /** accesses in flight while the VM's frames are faulted in */
  prefaultConcurrency: number;
}

/** Run fn on many indexes, `n` at a time. */
async function pool(count: number, n: number, fn: (i: number) => Promise<unknown>) {
  let next = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (next < count) await fn(next++);
    }),
  );
}

/**
 * The two vCPU loops until `until` settles: vCPU 1 loads hot frames round robin, vCPU 0 faults
 * fresh ones in (each once). Latencies in ms.
 */
async function vcpuLoops(
  rpc: RpcClient,
  kvm: string,
  vm: number,
  hot: { first: number; count: number },
  fresh: { first: number; count: number },
  until: Promise<unknown>,
): Promise<{ hits: number[]; faults: number[] }> {
  let stopped = false;
  void until.finally(() => (stopped = true));
  const hits: number[] = [];
  const faults: number[] = [];
  const read = async (vcpu: number, gfn: number, into: number[]) => {
    const t = performance.now();
    await rpc.call('kvmGuestRead', { vm, vcpu, gfn }, { id: kvm, timeoutMs: 60_000 });
    into.push(performance.now() - t);
  };
  await Promise.all([
    (async () => {
      for (let i = 0; !stopped; i++) await read(1, hot.first + (i % hot.count), hits);
    })(),
    (async () => {
      for (let i = 0; i < fresh.count && !stopped; i++) await read(0, fresh.first + i, faults);
    })(),
  ]);
  await until;
  return { hits, faults };
}

interface Point {
  mode: MmuLockMode;
  pages: number;
  teardownMs: number;
  longestHoldMs: number;
  idleFaultHoldMs: number;
  zapHolds: number;
  idle: { hits: number[]; faults: number[] };
  during: { hits: number[]; faults: number[] };
}

async function measure(
  env: TestLab,
  kvm: string,
  mode: MmuLockMode,
  pages: number,
  s: Sizes,
): Promise<Point> {
  const { rpc } = env;
  const total = pages + s.hot + 2 * s.fresh;
  const { pid } = await rpc.call('processCreate', {});
  const { addr } = await rpc.call('mmap', { pid, pages: total, prot: 'rw' });
  const { vm } = await rpc.call(
    'kvmCreateVm',
    { pid, memslots: [{ gfn: 0, pages: total, addr }], vcpus: 2 },
    { id: kvm },
  );
  // guest frames [0, pages): the teardown; then hot; then fresh (idle half, during half)
  const hot = { first: pages, count: s.hot };
  const freshIdle = { first: pages + s.hot, count: s.fresh };
  const freshDuring = { first: pages + s.hot + s.fresh, count: s.fresh };
  await pool(pages + s.hot, s.prefaultConcurrency, (g) =>
    rpc.call('kvmGuestRead', { vm, vcpu: g % 2, gfn: g }, { id: kvm, timeoutMs: 60_000 }),
  );
  const holds = async (from: number) =>
    (await env.settled())
      .slice(from)
      .filter(
        (e): e is EventOf<'kvm.mmu_lock'> =>
          e.kind === 'kvm.mmu_lock' && e.agent === kvm && e.vm === vm,
      );
  // idle: the same loops with no teardown
  let mark = (await env.settled()).length;
  const idle = await vcpuLoops(rpc, kvm, vm, hot, freshIdle, sleepMs(s.idleMs));
  const idleFaults = (await holds(mark)).filter((e) => e.what === 'fault').map((e) => e.heldMs);
  // the teardown, the loops running through it
  mark = (await env.settled()).length;
  const t0 = performance.now();
  const munmap = rpc.call('munmap', { pid, addr, pages }, { timeoutMs: 120_000 });
  const during = await vcpuLoops(rpc, kvm, vm, hot, freshDuring, munmap);
  const teardownMs = performance.now() - t0;
  const zaps = (await holds(mark)).filter((e) => e.what === 'zap');
  await rpc.call('kvmDestroyVm', { vm }, { id: kvm });
  await rpc.call('exit', { pid });
  return {
    mode,
    pages,
    teardownMs,
    longestHoldMs: Math.max(0, ...zaps.map((e) => e.heldMs)),
    idleFaultHoldMs: pct(idleFaults, 50),
    zapHolds: zaps.length,
    idle,
    during,
  };
}

const ratio = (a: number, b: number) => (b > 0 ? a / b : NaN);

export const mmuLock: Benchmark = {
  name: 'mmu-lock',
  measures:
    "KVM's mmu_lock spin / sleep / generation: teardown of a large guest range (longest hold) and guest latency elsewhere in the VM while it runs",
  target:
    'spin: longest hold grows with the range; sleep, generation: it does not (≤ 2× from the small range to the large); guest fault p99 during teardown ≤ 3× idle for sleep/generation',
  async run(opts): Promise<BenchResult> {
    const { quick, log } = opts;
    const s: Sizes = quick
      ? { ranges: [64, 256], hot: 16, fresh: 16, idleMs: 200, prefaultConcurrency: 8 }
      : { ranges: [1024, 16384], hot: 64, fresh: 64, idleMs: 1000, prefaultConcurrency: 16 };
    const largest = s.ranges[s.ranges.length - 1];
    const frames = 256; // read faults map the zero page: the frames are for mm's page tables
    const env = await startTestLab(
      {
        mode: 'patched',
        frames,
        cpus: 1,
        mmReplicas: 1,
        softlockupMs: 60_000,
        observer: false,
        subscribers: KVMS.map(([name, mmuLock]) => ({ name, kind: 'kvm' as const, mmuLock })),
      },
      { rpcTimeoutMs: 120_000 },
    );
    const points: Point[] = [];
    try {
      for (const pages of s.ranges)
        for (const [kvm, mode] of KVMS) {
          const p = await measure(env, kvm, mode, pages, s);
          points.push(p);
          log?.(
            `mmu-lock: ${mode} ${pages} pages: teardown ${round(p.teardownMs, 0)} ms, longest hold ${round(p.longestHoldMs, 1)} ms`,
          );
        }
    } catch (e) {
      await env.stop().catch((x: unknown) => log?.(`stop after the failure: ${String(x)}`));
      throw e;
    }
    await env.stop();
    const rows: Row[] = points.map((p) => ({
      mode: p.mode,
      pages: p.pages,
      teardownMs: round(p.teardownMs, 1),
      longestHoldMs: round(p.longestHoldMs, 2),
      zapHolds: p.zapHolds,
      idleFaultHoldMs: round(p.idleFaultHoldMs, 3),
      holdOverIdleFault: round(ratio(p.longestHoldMs, p.idleFaultHoldMs), 1),
      idleFaultP99Ms: round(pct(p.idle.faults, 99), 2),
      duringFaultP99Ms: round(pct(p.during.faults, 99), 2),
      faultP99Ratio: round(ratio(pct(p.during.faults, 99), pct(p.idle.faults, 99)), 2),
      idleHitP99Ms: round(pct(p.idle.hits, 99), 2),
      duringHitP99Ms: round(pct(p.during.hits, 99), 2),
      hitP99Ratio: round(ratio(pct(p.during.hits, 99), pct(p.idle.hits, 99)), 2),
      duringFaults: p.during.faults.length,
      duringHits: p.during.hits.length,
    }));
    const at = (mode: MmuLockMode, pages: number) =>
      points.find((p) => p.mode === mode && p.pages === pages)!;
    const growth = (mode: MmuLockMode) =>
      ratio(at(mode, largest).longestHoldMs, at(mode, s.ranges[0]).longestHoldMs);
    const faultRatio = (mode: MmuLockMode) => {
      const p = at(mode, largest);
      return ratio(pct(p.during.faults, 99), pct(p.idle.faults, 99));
    };
    const g = { spin: growth('spin'), sleep: growth('sleep'), generation: growth('generation') };
    const f = {
      spin: faultRatio('spin'),
      sleep: faultRatio('sleep'),
      generation: faultRatio('generation'),
    };
    const hitRatio = (mode: MmuLockMode) => {
      const p = at(mode, largest);
      return ratio(pct(p.during.hits, 99), pct(p.idle.hits, 99));
    };
    const h = {
      spin: hitRatio('spin'),
      sleep: hitRatio('sleep'),
      generation: hitRatio('generation'),
    };
    const met =
      g.spin > 2 && g.sleep <= 2 && g.generation <= 2 && f.sleep <= 3 && f.generation <= 3;
    const r2 = (x: number) => round(x, 2);
    return {
      name: this.name,
      measures: this.measures,
      quick,
      figure: {
        value: round(g.spin, 2),
        unit: '×',
        text:
          `longest hold ${s.ranges[0]}→${largest} pages: spin ${r2(g.spin)}×, sleep ${r2(g.sleep)}×, generation ${r2(g.generation)}×; ` +
          `fault p99 during/idle at ${largest}: spin ${r2(f.spin)}×, sleep ${r2(f.sleep)}×, generation ${r2(f.generation)}×; ` +
          `hit p99 during/idle: spin ${r2(h.spin)}×, sleep ${r2(h.sleep)}×, generation ${r2(h.generation)}×`,
      },
      target: { text: this.target, met: quick ? null : met },
      rows,
      notes: [
        `teardown sizes ${s.ranges.join(', ')} guest frames (zero-page sPTEs), one munmap each; ${s.hot} hot frames on vCPU 1, ${s.fresh} fresh frames per phase on vCPU 0; idle phase ${s.idleMs} ms`,
        'v3.7 mmu_notifier_retry checks a per-VM count: guest faults anywhere in the VM wait for the range end in every mode',
      ],
      plot: linePlot({
        title: 'mmu-lock: longest mmu_lock hold during a guest-range teardown',
        rows,
        x: 'pages',
        y: 'longestHoldMs',
        series: 'mode',
        xTitle: 'guest frames torn down',
        yTitle: 'longest mmu_lock hold (ms)',
        logX: true,
        logY: true,
      }),
    };
  },
};
