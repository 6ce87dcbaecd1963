/**
 * dispatch-fanout: how long an invalidation waits for its subscribers when each takes d ms to
 * answer invalidate_range_start, with 1 to 4 subscribers, dispatched in parallel (every
 * callback sent, then every ack awaited) and serially (one after the other, as the kernel's
 * hlist walk in __mmu_notifier_invalidate_range_start does). Parallel should stay near d at
 * every count; serial grows as k·d.
 *
 * The invalidation is a munmap of one touched page of a process with k HCAs registered (one
 * ODP MR each); its wall time is the latency (the range end is answered at once: the latency
 * fault is on invalidate_range_start only). Each dispatch is a lab of its own (MMLAB_DISPATCH
 * is per lab; the quick variant's shared lab restarts its mm replicas to change it); the figure
 * is the ratio to d measured in the same run.
 */
import { type Dispatch, PAGE_SIZE } from '@mmlab/protocol';
import { startTestLab } from '@mmlab/testing';
import {
  type BenchOptions,
  type BenchResult,
  type Benchmark,
  type Row,
  pct,
  round,
  timed,
  withLab,
} from '../lib/harness';
import { linePlot } from '../lib/plot';

async function fanout(
  opts: BenchOptions,
  dispatch: Dispatch,
  maxSubs: number,
  d: number,
  samples: number,
) {
  const subs = Array.from({ length: maxSubs }, (_x, i) => `hca${i}`);
  const own = () =>
    startTestLab(
      {
        mode: 'patched',
        frames: 256,
        cpus: 1,
        mmReplicas: 1,
        observer: false,
        dispatch,
        subscribers: subs.map((name) => ({ name, kind: 'hca' as const, invalidateLatencyMs: 0 })),
      },
      { trace: false, rpcTimeoutMs: 60_000 },
    );
  const need = { mode: 'patched' as const, dispatch, frames: 256, hcas: maxSubs };
  return withLab(opts, need, own, async (env) => {
    const { rpc } = env;
    const out = new Map<number, number[]>();
    for (let k = 1; k <= maxSubs; k++) {
      const { pid } = await rpc.call('processCreate', {});
      const { addr } = await rpc.call('mmap', { pid, pages: samples + 1, prot: 'rw' });
      for (const s of subs.slice(0, k))
        await rpc.call(
          'hcaRegMr',
          { pid, addr, pages: samples + 1, odp: true, access: ['read'] },
          { id: s },
        );
      for (let i = 0; i <= samples; i++)
        await rpc.call(
          'cpuAccess',
          { pid, addr: addr + i * PAGE_SIZE, op: 'write', value: 1 },
          { id: 0 },
        );
      const slow = [
        {
          fault: 'latency' as const,
          distribution: d,
          callbacks: ['invalidate_range_start' as const],
        },
      ];
      for (const s of subs) await rpc.call('subChaos', { faults: slow }, { id: s });
      // the first munmap is a warm-up
      const t = await timed(samples + 1, (i) =>
        rpc.call('munmap', { pid, addr: addr + i * PAGE_SIZE, pages: 1 }),
      );
      for (const s of subs) await rpc.call('subChaos', { faults: [] }, { id: s });
      out.set(k, t.slice(1));
    }
    return out;
  });
}

export const dispatchFanout: Benchmark = {
  name: 'dispatch-fanout',
  measures: 'invalidation latency, 1–4 subscribers × 200 ms, parallel vs serial',
  target: 'parallel ≤ 215 ms at every count; serial ≈ k·d',
  async run(opts): Promise<BenchResult> {
    const { quick, log } = opts;
    const d = quick ? 20 : 200;
    const maxSubs = quick ? 2 : 4;
    const samples = quick ? 1 : 5;
    const rows: Row[] = [];
    let worstParallel = 0;
    for (const dispatch of ['parallel', 'serial'] as const) {
      const by = await fanout(opts, dispatch, maxSubs, d, samples);
      for (const [k, t] of by) {
        const p50 = pct(t, 50);
        if (dispatch === 'parallel') worstParallel = Math.max(worstParallel, p50);
        rows.push({
          dispatch,
          subscribers: k,
          p50Ms: round(p50, 1),
          maxMs: round(Math.max(...t), 1),
          overD: round(p50 / d, 2),
          overKd: round(p50 / (k * d), 2),
        });
        log?.(`dispatch-fanout: ${dispatch}, ${k} subscribers: p50 ${round(p50, 1)} ms`);
      }
    }
    const serialFit = rows.filter((r) => r.dispatch === 'serial').map((r) => Number(r.overKd));
    return {
      name: this.name,
      measures: this.measures,
      quick,
      figure: {
        value: round(worstParallel, 1),
        unit: 'ms',
        text: `parallel worst p50 ${round(worstParallel, 0)} ms (${round(worstParallel / d, 2)}× d=${d}); serial ${round(Math.min(...serialFit), 2)}–${round(Math.max(...serialFit), 2)}× k·d`,
      },
      target: {
        text: this.target,
        met: quick
          ? null
          : worstParallel <= d + 15 && serialFit.every((x) => x >= 0.9 && x <= 1.25),
      },
      rows,
      plot: linePlot({
        title: `dispatch-fanout: invalidation latency, each subscriber ${d} ms`,
        rows,
        x: 'subscribers',
        y: 'p50Ms',
        series: 'dispatch',
        xTitle: 'subscribers',
        yTitle: 'munmap latency p50 (ms)',
        rule: { y: d + 15, label: 'target (parallel)' },
      }),
    };
  },
};
