/**
 * ptlock-vs-sleep: how long a PT lock is held while a notifier subscriber sleeps 0, 10, 100 or
 * 1000 ms in its callback, patched (v3.7: the device is told before the lock is taken and after
 * it is dropped) and legacy (v3.6 placement: under it). The operation is do_wp_page on a page an
 * ODP MR maps: a CPU store to a page write-protected by fork copies it, and the HCA is notified
 * (patched: invalidate_range_start/end around the lock; legacy: set_pte_at_notify under it,
 * which is invalidate_page for a subscriber without change_pte).
 *
 * Each sample is one COW; its hold is the longest ptl.release heldMs the COW produced. The
 * device's sleep is a latency fault set on hca0 (mmlab.sub.hca0.chaos) for that store only, so
 * the fork before it runs at full speed. Both modes run in this benchmark, one lab each (a
 * lab has one mode); the patched figure is a ratio within its own lab (1000 ms against 0).
 */
import { type EventOf, type Mode, type TraceEvent } from '@mmlab/protocol';
import { startTestLab } from '@mmlab/testing';
import {
  type BenchOptions,
  type BenchResult,
  type Benchmark,
  type Row,
  pct,
  round,
  withLab,
} from '../lib/harness';
import { linePlot } from '../lib/plot';

/**
 * The events of every service between a hold's ptl.acquire and its ptl.release, as
 * "kind(instance)@ms after the acquire": where the time of the longest hold went.
 */
function insideHold(events: TraceEvent[], rel: EventOf<'ptl.release'>): string {
  const acq = events.find(
    (e) => e.kind === 'ptl.acquire' && e.lock === rel.lock && e.token === rel.token,
  );
  if (!acq) return '';
  return events
    .filter((e) => e.ts >= acq.ts && e.ts <= rel.ts && e !== acq)
    .sort((a, b) => a.ts - b.ts)
    .map((e) => `${e.kind}(${e.instance})@${round(e.ts - acq.ts, 1)}`)
    .join(' ');
}

async function holdsFor(opts: BenchOptions, mode: Mode, sleeps: number[], samples: number) {
  const own = () =>
    startTestLab(
      {
        mode,
        frames: 512,
        cpus: 1,
        mmReplicas: 1,
        softlockupMs: 60_000,
        observer: false,
        subscribers: [{ name: 'hca0', kind: 'hca', invalidateLatencyMs: 0 }],
      },
      { rpcTimeoutMs: 60_000 },
    );
  const need = { mode, trace: true, hcas: 1, cpus: 1, frames: 512, softlockupMs: 60_000 };
  return withLab(opts, need, own, async (env) => {
    const { rpc } = env;
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 1, prot: 'rw' });
    await rpc.call('cpuAccess', { pid, addr, op: 'write', value: 1 }, { id: 0 });
    const { mr } = await rpc.call(
      'hcaRegMr',
      { pid, addr, pages: 1, odp: true, access: ['read'] },
      { id: 'hca0' },
    );
    const out = new Map<number, number[]>();
    /** per sleep: what happened inside the longest hold (event kind @ ms after the acquire) */
    const inside = new Map<number, string>();
    let value = 2;
    const worst = new Map<number, number>();
    for (const d of sleeps) out.set(d, []);
    // Round-robin over the sleeps (0, 10, 100, 1000, 0, 10, …): a machine that gets busier or
    // quieter during the run moves every point alike, instead of the last point's samples.
    for (let s = 0; s < samples; s++) {
      for (const d of sleeps) {
        // fork write-protects the page; the HCA maps it again (read); the store then copies it
        await rpc.call('hcaRdmaRead', { mr, addr }, { id: 'hca0' });
        await rpc.call('fork', { pid });
        await rpc.call('hcaRdmaRead', { mr, addr }, { id: 'hca0' });
        const faults = d > 0 ? [{ fault: 'latency' as const, distribution: d }] : [];
        await rpc.call('subChaos', { faults }, { id: 'hca0' });
        const before = env.trace.events.length;
        await rpc.call('cpuAccess', { pid, addr, op: 'write', value: value++ }, { id: 0 });
        await rpc.call('subChaos', { faults: [] }, { id: 'hca0' });
        const events = (await env.settled()).slice(before);
        const rel = events.filter(
          (e): e is EventOf<'ptl.release'> => e.kind === 'ptl.release' && e.pid === pid,
        );
        if (rel.length === 0) throw new Error(`${mode}: the COW released no PT lock of ${pid}`);
        const longest = rel.reduce((a, b) => (b.heldMs > a.heldMs ? b : a));
        out.get(d)!.push(longest.heldMs);
        if (longest.heldMs > (worst.get(d) ?? -1)) {
          worst.set(d, longest.heldMs);
          inside.set(d, insideHold(events, longest));
        }
      }
    }
    return { holds: out, inside };
  });
}

export const ptlockVsSleep: Benchmark = {
  name: 'ptlock-vs-sleep',
  measures:
    'PT-lock hold p50/p99/max with a device sleeping 0, 10, 100, 1000 ms, patched and legacy',
  target: 'patched p99 at 1000 ≤ 1.5× at 0; legacy p50 at 1000 ≥ 100× patched',
  async run(opts): Promise<BenchResult> {
    const { quick, log } = opts;
    const sleeps = quick ? [0, 10] : [0, 10, 100, 1000];
    // The same number at every point: a p99 of n samples is about their worst, so points with
    // fewer samples would compare a worst-of-5 with a worst-of-30.
    const samples = quick ? 1 : 30;
    const rows: Row[] = [];
    const by: Partial<Record<Mode, Map<number, number[]>>> = {};
    for (const mode of ['patched', 'legacy'] as const) {
      const { holds, inside } = await holdsFor(opts, mode, sleeps, samples);
      by[mode] = holds;
      for (const [d, h] of holds) {
        rows.push({
          mode,
          sleepMs: d,
          samples: h.length,
          p50Ms: round(pct(h, 50)),
          p99Ms: round(pct(h, 99)),
          maxMs: round(Math.max(...h)),
          insideMax: inside.get(d) ?? '',
        });
        log?.(`ptlock-vs-sleep: ${mode} sleep ${d} ms: p50 ${round(pct(h, 50))} ms`);
      }
    }
    const top = sleeps[sleeps.length - 1];
    const p = (mode: Mode, d: number, q: number) => pct(by[mode]!.get(d)!, q);
    const patchedGrowth = p('patched', top, 99) / p('patched', 0, 99);
    const legacyOverPatched = p('legacy', top, 50) / p('patched', top, 50);
    return {
      name: this.name,
      measures: this.measures,
      quick,
      figure: {
        value: round(patchedGrowth, 2),
        unit: '×',
        text: `patched p99 at ${top} = ${round(patchedGrowth, 2)}× at 0; legacy p50 at ${top} = ${round(legacyOverPatched, 0)}× patched`,
      },
      target: {
        text: this.target,
        met: top === 1000 ? patchedGrowth <= 1.5 && legacyOverPatched >= 100 : null,
      },
      rows,
      counts: { legacyOverPatchedP50AtTop: round(legacyOverPatched, 1) },
      plot: linePlot({
        title: 'ptlock-vs-sleep: PT-lock hold p99 against the device sleep',
        rows: rows.map((r) => ({ ...r, sleep: Math.max(1, Number(r.sleepMs)) })),
        x: 'sleep',
        y: 'p99Ms',
        series: 'mode',
        xTitle: 'device sleep (ms; 0 drawn at 1)',
        yTitle: 'PT-lock hold p99 (ms)',
        logX: true,
        logY: true,
      }),
    };
  },
};
