/**
 * faults-under-invalidation: do page faults on neighbouring pages (same page-table page, so
 * the same split PT lock) go on while a notifier subscriber takes 1 s to answer an
 * invalidation of one page of it? Four CPUs write-fault fresh pages of the PMD while a
 * do_wp_page (COW of a page an ODP MR maps, the HCA sleeping 1 s in its callback) runs on it:
 *
 *   patched (v3.7)                          legacy (v3.6 placement)
 *   invalidate_range_start → HCA (1 s)      pte lock
 *     cpu0..3 fault neighbours: lock free     set_pte_at_notify → invalidate_page (1 s)
 *   pte lock; copy; set pte; unlock             cpu0..3 fault neighbours: wait for the lock
 *   invalidate_range_end                     unlock
 *
 * The baseline, in the same process just before (A/B per round): the same four CPUs faulting a
 * fresh PMD of their own for the same window with no invalidation. Figure: neighbour faults/s
 * during the invalidation over the baseline's. Each stream has its own slice of the PMD; a
 * stream that used its slice up is counted over the time it ran.
 */
import { performance } from 'node:perf_hooks';
import { MmlabError, type Mode, PAGE_SIZE, PTRS_PER_PTE } from '@mmlab/protocol';
import type { RpcClient } from '@mmlab/runtime';
import { startTestLab } from '@mmlab/testing';
import {
  type BenchOptions,
  type BenchResult,
  type Benchmark,
  type Row,
  round,
  withLab,
} from '../lib/harness';
import { linePlot } from '../lib/plot';

/** CPUs 0..cpus-1 write-fault their slices of vpns [first, first + pages) until `until` settles. */
async function neighbours(
  rpc: RpcClient,
  cpus: number,
  pid: number,
  first: number,
  pages: number,
  until: Promise<unknown>,
): Promise<{ rate: number; failed: number }> {
  let stopped = false;
  void until.finally(() => (stopped = true));
  const slice = Math.floor(pages / cpus);
  let failed = 0;
  const t0 = performance.now();
  const perStream = await Promise.all(
    Array.from({ length: cpus }, async (_x, c) => {
      let done = 0;
      let i = 0;
      for (; i < slice && !stopped; i++) {
        try {
          await rpc.call(
            'cpuAccess',
            { pid, addr: (first + c * slice + i) * PAGE_SIZE, op: 'write', value: 1 },
            { id: c },
          );
          if (!stopped) done++;
        } catch (e) {
          if (!(e instanceof MmlabError)) throw e;
          failed++;
        }
      }
      return done / ((performance.now() - t0) / 1000);
    }),
  );
  await until;
  return { rate: perStream.reduce((a, b) => a + b, 0), failed };
}

async function rounds(opts: BenchOptions, mode: Mode, cpus: number, n: number, sleepMs: number) {
  const frames = n * 3 * PTRS_PER_PTE + 256;
  const own = () =>
    startTestLab(
      {
        mode,
        frames,
        cpus,
        mmReplicas: cpus > 2 ? 2 : 1,
        softlockupMs: 60_000,
        observer: false,
        subscribers: [{ name: 'hca0', kind: 'hca', invalidateLatencyMs: 0 }],
      },
      { trace: false, rpcTimeoutMs: 60_000 },
    );
  const need = { mode, frames, cpus, hcas: 1, softlockupMs: 60_000 };
  return withLab(opts, need, own, async (env) => {
    const out: Array<{
      baseline: number;
      during: number;
      invalidationMs: number;
      failed: number;
    }> = [];
    const { rpc } = env;
    for (let r = 0; r < n; r++) {
      const { pid } = await rpc.call('processCreate', {});
      const { addr } = await rpc.call('mmap', { pid, pages: 3 * PTRS_PER_PTE, prot: 'rw' });
      const vpn0 = addr / PAGE_SIZE;
      const pmdA = Math.ceil(vpn0 / PTRS_PER_PTE) * PTRS_PER_PTE; // first whole PMD
      const pmdB = pmdA + PTRS_PER_PTE;
      const x = pmdA * PAGE_SIZE; // the page the HCA maps and the COW copies
      await rpc.call('cpuAccess', { pid, addr: x, op: 'write', value: 1 }, { id: 0 });
      const { mr } = await rpc.call(
        'hcaRegMr',
        { pid, addr: x, pages: 1, odp: true, access: ['read'] },
        { id: 'hca0' },
      );
      await rpc.call('hcaRdmaRead', { mr, addr: x }, { id: 'hca0' });
      const { pid: child } = await rpc.call('fork', { pid });
      await rpc.call('hcaRdmaRead', { mr, addr: x }, { id: 'hca0' });
      // A: no invalidation, a PMD of its own, for as long as the invalidation will take
      const a = await neighbours(
        rpc,
        cpus,
        pid,
        pmdB,
        PTRS_PER_PTE,
        new Promise((r2) => setTimeout(r2, sleepMs)),
      );
      // B: the COW of x, the HCA sleeping in its callback, and the neighbours of x faulting
      await rpc.call(
        'subChaos',
        {
          faults: [
            {
              fault: 'latency',
              distribution: sleepMs,
              callbacks: ['invalidate_range_start', 'invalidate_page'],
            },
          ],
        },
        { id: 'hca0' },
      );
      const t0 = performance.now();
      const cow = rpc.call('fault', { pid, addr: x, access: 'write', agent: 'bench' });
      const b = await neighbours(rpc, cpus, pid, pmdA + 1, PTRS_PER_PTE - 1, cow);
      const invalidationMs = performance.now() - t0;
      await rpc.call('subChaos', { faults: [] }, { id: 'hca0' });
      await rpc.call('hcaDeregMr', { mr }, { id: 'hca0' });
      await rpc.call('exit', { pid: child });
      await rpc.call('exit', { pid });
      out.push({ baseline: a.rate, during: b.rate, invalidationMs, failed: a.failed + b.failed });
      opts.log?.(
        `faults-under-invalidation: ${mode} round ${r + 1}: ${round(a.rate, 0)} → ${round(b.rate, 0)}/s`,
      );
    }
    return out;
  });
}

export const faultsUnderInvalidation: Benchmark = {
  name: 'faults-under-invalidation',
  measures: 'neighbour fault throughput (4 CPUs, one PT lock) during a 1 s invalidation vs none',
  target: 'patched ≥ 0.9×; legacy shown',
  async run(opts): Promise<BenchResult> {
    const { quick } = opts;
    const n = quick ? 1 : 2;
    const sleepMs = quick ? 200 : 1000;
    const cpus = quick ? 1 : 4;
    const rows: Row[] = [];
    const ratio: Partial<Record<Mode, number>> = {};
    for (const mode of ['patched', 'legacy'] as const) {
      const rs = await rounds(opts, mode, cpus, n, sleepMs);
      const base = rs.reduce((s, r) => s + r.baseline, 0) / rs.length;
      const during = rs.reduce((s, r) => s + r.during, 0) / rs.length;
      ratio[mode] = during / base;
      rs.forEach((r, i) =>
        rows.push({
          mode,
          round: i + 1,
          baselinePerSecond: round(r.baseline, 0),
          duringPerSecond: round(r.during, 0),
          ratio: round(r.during / r.baseline, 2),
          invalidationMs: round(r.invalidationMs, 0),
          failedFaults: r.failed,
        }),
      );
    }
    return {
      name: this.name,
      measures: this.measures,
      quick,
      figure: {
        value: round(ratio.patched!, 2),
        unit: '×',
        text: `patched ${round(ratio.patched!, 2)}×, legacy ${round(ratio.legacy!, 2)}× of the no-invalidation rate`,
      },
      target: { text: this.target, met: quick ? null : ratio.patched! >= 0.9 },
      rows,
      notes: [`device sleep ${sleepMs} ms; ${cpus} CPUs; ${n} A/B round(s) per mode`],
      plot: linePlot({
        title: 'faults-under-invalidation: neighbour faults/s, during / without an invalidation',
        rows,
        x: 'round',
        y: 'ratio',
        series: 'mode',
        yTitle: 'during / baseline',
        rule: { y: 0.9, label: 'target' },
      }),
    };
  },
};
