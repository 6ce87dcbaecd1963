/**
 * odp-vs-pinned: what registering a memory region costs, and its first touch, from 16 to
 * 16,384 pages, ODP (ib_umem_odp_get: nothing pinned, the device table fills on demand) against
 * pinned (ib_umem_get: every page faulted in and pinned at registration). ODP registration
 * should not grow with the size; pinned grows with it, and pays nothing on first touch.
 *
 * Each size is measured ODP then pinned (A/B) on fresh mappings; every cost is given as a ratio
 * to the same mode's cost at the smallest size, measured in the same run.
 */
import { performance } from 'node:perf_hooks';
import { PAGE_SIZE } from '@mmlab/protocol';
import { startTestLab } from '@mmlab/testing';
import { type BenchResult, type Benchmark, type Row, pct, round, withLab } from '../lib/harness';
import { linePlot } from '../lib/plot';

export const odpVsPinned: Benchmark = {
  name: 'odp-vs-pinned',
  measures: 'registration and first-touch cost, 16 to 16,384 pages',
  target: 'ODP registration flat within 20%; pinned grows',
  async run(opts): Promise<BenchResult> {
    const { quick, log } = opts;
    const sizes = quick ? [16, 64] : [16, 256, 4096, 16384];
    const reps = quick ? 1 : 3;
    const maxPages = Math.max(...sizes);
    const own = () =>
      startTestLab(
        {
          mode: 'patched',
          frames: maxPages + 1024,
          memlockPages: maxPages + 1024,
          cpus: 1,
          mmReplicas: 2,
          observer: false,
          subscribers: [{ name: 'hca0', kind: 'hca', invalidateLatencyMs: 0 }],
        },
        // past the HCA's gup deadline for the biggest size (gupDeadlineMs: ~7 min at 16,384 pages)
        { trace: false, rpcTimeoutMs: 900_000 },
      );
    // quick: the shared patched lab (bench/lib/labs.ts); its own lab is stopped by withLab, the
    // first error kept
    const need = {
      mode: 'patched' as const,
      frames: 2 * maxPages,
      memlockPages: maxPages,
      hcas: 1,
    };
    return withLab(opts, need, own, async ({ rpc }) => {
      const { pid } = await rpc.call('processCreate', {});
      const ms = async (fn: () => Promise<unknown>) => {
        const t = performance.now();
        await fn();
        return performance.now() - t;
      };
      const samples = new Map<string, { reg: number[]; touch: number[] }>();
      const one = async (pages: number, odp: boolean) => {
        const { addr } = await rpc.call('mmap', { pid, pages, prot: 'rw' });
        let mr = 0;
        const reg = await ms(async () => {
          ({ mr } = await rpc.call(
            'hcaRegMr',
            { pid, addr, pages, odp, access: ['read', 'write'] },
            { id: 'hca0' },
          ));
        });
        const touch = await ms(() =>
          rpc.call(
            'hcaRdmaWrite',
            { mr, addr: addr + (pages - 1) * PAGE_SIZE, value: 7 },
            { id: 'hca0' },
          ),
        );
        await rpc.call('hcaDeregMr', { mr }, { id: 'hca0' });
        await rpc.call('munmap', { pid, addr, pages });
        const key = `${odp ? 'odp' : 'pinned'}:${pages}`;
        const s = samples.get(key) ?? { reg: [], touch: [] };
        s.reg.push(reg);
        s.touch.push(touch);
        samples.set(key, s);
      };
      await one(16, true); // warm-up
      await one(16, false);
      samples.clear();
      for (let r = 0; r < reps; r++)
        for (const pages of sizes) {
          await one(pages, true);
          await one(pages, false);
          log?.(`odp-vs-pinned: rep ${r + 1}, ${pages} pages`);
        }
      const rows: Row[] = [];
      const med = (mode: string, pages: number, k: 'reg' | 'touch') =>
        pct(samples.get(`${mode}:${pages}`)![k], 50);
      for (const mode of ['odp', 'pinned'])
        for (const pages of sizes)
          rows.push({
            mode,
            pages,
            regMs: round(med(mode, pages, 'reg'), 2),
            firstTouchMs: round(med(mode, pages, 'touch'), 2),
            regOverSmallest: round(med(mode, pages, 'reg') / med(mode, sizes[0], 'reg'), 2),
          });
      const top = sizes[sizes.length - 1];
      const odpGrowth = med('odp', top, 'reg') / med('odp', sizes[0], 'reg');
      const pinnedGrowth = med('pinned', top, 'reg') / med('pinned', sizes[0], 'reg');
      return {
        name: this.name,
        measures: this.measures,
        quick,
        figure: {
          value: round(odpGrowth, 2),
          unit: '×',
          text: `ODP reg at ${top} pages = ${round(odpGrowth, 2)}× at ${sizes[0]}; pinned ${round(pinnedGrowth, 0)}×`,
        },
        target: { text: this.target, met: quick ? null : odpGrowth <= 1.2 && pinnedGrowth > 2 },
        rows,
        plot: linePlot({
          title: 'odp-vs-pinned: registration time against MR size',
          rows,
          x: 'pages',
          y: 'regMs',
          series: 'mode',
          xTitle: 'MR size (pages)',
          yTitle: 'registration p50 (ms)',
          logX: true,
          logY: true,
        }),
      };
    });
  },
};
