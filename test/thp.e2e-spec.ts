/**
 * Transparent huge pages: the seed's THP examples (examples/seed/) in both eras, as
 * `mmlab run --local` runs them — valid in v3.7 (patched: range start/end over the whole huge
 * range outside page_table_lock); in v3.6 (legacy: pmdp_*_flush_notify under it) the checker
 * reports exactly no-sleep-under-ptlock, where the slow HCA slept — and the THP injections
 * (examples/inject/thp-*.yaml), each caught by the checker with the HCA showing the consequence.
 * Every run ends fsck-clean (thp rule included). The model's logic is in unit specs
 * (libs/fsck/src/thp.spec.ts); this file runs few, short labs, two at a time.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { EventOf, TraceEvent } from '@mmlab/protocol';
import {
  LEGACY_TWIN_OK,
  outcomeOf,
  runLegacyTwin as runLegacyTwinAlone,
  runScenario as runScenarioAlone,
} from '@mmlab/testing';
import { expectInjectionCaught } from './support/inject-checks';

const tmp = mkdtempSync(path.join(tmpdir(), 'mmlab-thp-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Two labs at a time (the machine has 2 cores): the tests run concurrently, the labs in pairs. */
let running = 0;
const waiting: Array<() => void> = [];
async function twoAtATime<T>(fn: () => Promise<T>): Promise<T> {
  if (running >= 2) await new Promise<void>((r) => waiting.push(r));
  running++;
  try {
    return await fn();
  } finally {
    running--;
    waiting.shift()?.();
  }
}
const runScenario = (...a: Parameters<typeof runScenarioAlone>) =>
  twoAtATime(() => runScenarioAlone(...a));
const runLegacyTwin = (...a: Parameters<typeof runLegacyTwinAlone>) =>
  twoAtATime(() => runLegacyTwinAlone(...a));

const thp = (evs: TraceEvent[], event: EventOf<'thp'>['event']) =>
  evs.filter((e): e is EventOf<'thp'> => e.kind === 'thp' && e.event === event);
const faults = (evs: TraceEvent[]) =>
  evs.filter((e): e is EventOf<'fault.end'> => e.kind === 'fault.end');
const pidOf = (e: TraceEvent): number | undefined => ('pid' in e ? e.pid : undefined);
const ofOp = (evs: TraceEvent[], op: string) => evs.filter((e) => e.op === op);

/**
 * The events of the op that replaced a huge entry (its thp event's op) — range start over the
 * whole huge range, page_table_lock, range end — in v3.7's order: start before the lock, end
 * after its release, both with the same range, no notifier sent with the lock held.
 */
function expectV37Order(evs: TraceEvent[], op: string, haddr: number, hpage: number): void {
  const o = ofOp(evs, op);
  const start = o.findIndex((e) => e.kind === 'mn.range_start');
  const acquire = o.findIndex((e) => e.kind === 'ptl.acquire' && e.lock === 'ptl:mm');
  const release = o.findIndex((e) => e.kind === 'ptl.release' && e.lock === 'ptl:mm');
  const end = o.findIndex((e) => e.kind === 'mn.range_end');
  expect(
    [start, acquire, release, end].every((i) => i >= 0),
    op,
  ).toBe(true);
  expect(start).toBeLessThan(acquire);
  expect(release).toBeLessThan(end);
  const s = o[start] as EventOf<'mn.range_start'>;
  const e = o[end] as EventOf<'mn.range_end'>;
  expect([s.start, s.end]).toEqual([haddr, haddr + hpage]);
  expect([e.start, e.end]).toEqual([s.start, s.end]);
  expect(o.filter((x) => x.kind === 'mn.send').every((x) => x.ptl === null)).toBe(true);
}

const HADDR = 0x10000000;
const HPAGE = 4 * 4096;

describe.concurrent('examples/seed: do_huge_pmd_wp_page and its fallback', () => {
  it('do_huge_pmd_wp_page, v3.7: the HCA maps subpages, the COW copies the huge page inside a whole-range invalidation', async () => {
    const run = await runScenario('examples/seed/do_huge_pmd_wp_page.yaml', 'thp-wp-v37', tmp);
    expect(outcomeOf(run), run.log).toEqual({ ...LEGACY_TWIN_OK, broken: [] });
    expect(run.results.fsck).toEqual({ ok: true, findings: [] });
    const { events } = run;
    // one huge page at fault, shared by fork, copied by the parent's write, reused by the child's
    const [fault] = thp(events, 'fault');
    expect(fault).toMatchObject({ pid: 1, addr: HADDR, order: 2 });
    expect(thp(events, 'copy-pmd')).toHaveLength(1);
    const [copy] = thp(events, 'copy');
    expect(copy.pfn).not.toBe(fault.pfn);
    expect(thp(events, 'reuse')).toHaveLength(1);
    // the HCA's faults answer subpages: head + index
    const hca = faults(events).filter((f) => f.agent === 'hca0' && f.pfn !== undefined);
    for (const f of hca) {
      const head = f.pfn! - ((f.addr - HADDR) >> 12);
      expect([fault.pfn, copy.pfn]).toContain(head);
    }
    expect(hca.some((f) => f.pfn === copy.pfn! + 1)).toBe(true);
    expect(faults(events).map((f) => f.how)).toContain('thp-copy');
    expectV37Order(events, copy.op!, HADDR, HPAGE);
    // both huge pages freed whole at exit: every frame of each
    const freed = events.filter((e) => e.kind === 'frame.free').map((e) => e.pfn);
    for (const h of [fault.pfn!, copy.pfn!])
      expect(freed.filter((p) => p >= h && p < h + 4).sort((a, b) => a - b)).toEqual([
        h,
        h + 1,
        h + 2,
        h + 3,
      ]);
  });

  it('do_huge_pmd_wp_page, v3.6: range start/end under page_table_lock, where the HCA sleeps', async () => {
    const run = await runLegacyTwin('examples/seed/do_huge_pmd_wp_page.yaml', 'thp-wp-v36', tmp);
    expect(outcomeOf(run), run.log).toEqual(LEGACY_TWIN_OK);
    const [copy] = thp(run.events, 'copy');
    const sends = ofOp(run.events, copy.op!).filter(
      (e): e is EventOf<'mn.send'> => e.kind === 'mn.send',
    );
    expect(sends.length).toBeGreaterThanOrEqual(2);
    expect(sends.every((s) => s.ptl === 'ptl:mm')).toBe(true);
  });

  it('do_huge_pmd_wp_page_fallback, v3.7: no huge page free — small copies replace the entry inside the range', async () => {
    const run = await runScenario(
      'examples/seed/do_huge_pmd_wp_page_fallback.yaml',
      'thp-fallback-v37',
      tmp,
    );
    expect(outcomeOf(run), run.log).toEqual({ ...LEGACY_TWIN_OK, broken: [] });
    expect(run.results.fsck).toEqual({ ok: true, findings: [] });
    const { events } = run;
    const [fb] = thp(events, 'cow-fallback');
    expect(fb).toMatchObject({ pid: 1, addr: HADDR, fallbacks: 1 });
    expect(thp(events, 'copy')).toEqual([]);
    const cow = faults(events).find((f) => f.how === 'thp-fallback');
    expect(cow?.op).toBe(fb.op);
    expectV37Order(events, fb.op!, HADDR, HPAGE);
    // the huge entry replaced by 4 small writable PTEs under page_table_lock
    const set = ofOp(events, fb.op!).filter(
      (e): e is EventOf<'pte.set'> => e.kind === 'pte.set' && e.lock === 'ptl:mm',
    );
    expect(set.map((s) => [s.addr - HADDR, s.writable])).toEqual([
      [0, true],
      [4096, true],
      [8192, true],
      [12288, true],
    ]);
  });

  it('do_huge_pmd_wp_page_fallback, v3.6: pmdp_clear_flush_notify under page_table_lock', async () => {
    const run = await runLegacyTwin(
      'examples/seed/do_huge_pmd_wp_page_fallback.yaml',
      'thp-fallback-v36',
      tmp,
    );
    expect(outcomeOf(run), run.log).toEqual(LEGACY_TWIN_OK);
    expect(thp(run.events, 'cow-fallback')).toHaveLength(1);
  });
});

describe.concurrent('examples/seed: __split_huge_page_splitting and collapse_huge_page', () => {
  it('__split_huge_page_splitting, v3.7: thp.split and a partial munmap split every mapping inside a whole-range invalidation', async () => {
    const run = await runScenario(
      'examples/seed/__split_huge_page_splitting.yaml',
      'thp-split-v37',
      tmp,
    );
    expect(outcomeOf(run), run.log).toEqual({ ...LEGACY_TWIN_OK, broken: [] });
    expect(run.results.fsck).toEqual({ ok: true, findings: [] });
    const splits = thp(run.events, 'split');
    // the step's split and the munmap's, each in the parent and in the child
    expect(splits.map((e) => [e.pid, e.addr - HADDR])).toEqual([
      [1, 0],
      [2, 0],
      [1, HPAGE],
      [2, HPAGE],
    ]);
    expect(splits[2].op).toMatch(/munmap/);
    // (the child has no subscriber: no notifier call there, mm_has_notifiers)
    for (const s of splits.filter((x) => x.pid === 1)) {
      // the split's own range over its huge page (the munmap's range over its one page is
      // open around it: nested)
      const o = ofOp(run.events, s.op!).filter((e) => pidOf(e) === s.pid);
      const start = o.find(
        (e): e is EventOf<'mn.range_start'> => e.kind === 'mn.range_start' && e.start === s.addr,
      );
      expect(start?.end).toBe(s.addr + HPAGE);
    }
    expectV37Order(
      run.events.filter((e) => pidOf(e) === undefined || pidOf(e) === 1),
      splits[0].op!,
      HADDR,
      HPAGE,
    );
    // after the split a write copies one small page (do_wp_page), no huge page
    expect(faults(run.events).some((f) => f.how === 'wp-copy')).toBe(true);
  });

  it('__split_huge_page_splitting, v3.6: pmdp_splitting_flush_notify under page_table_lock', async () => {
    const run = await runLegacyTwin(
      'examples/seed/__split_huge_page_splitting.yaml',
      'thp-split-v36',
      tmp,
    );
    expect(outcomeOf(run), run.log).toEqual(LEGACY_TWIN_OK);
    const [s] = thp(run.events, 'split');
    const sends = ofOp(run.events, s.op!).filter(
      (e): e is EventOf<'mn.send'> => e.kind === 'mn.send',
    );
    expect(sends.length).toBeGreaterThan(0);
    expect(sends.every((x) => x.ptl === 'ptl:mm')).toBe(true);
  });

  it('collapse_huge_page, v3.7: four small pages written by CPU and HCA become one huge page, copied', async () => {
    const run = await runScenario('examples/seed/collapse_huge_page.yaml', 'thp-collapse-v37', tmp);
    expect(outcomeOf(run), run.log).toEqual({ ...LEGACY_TWIN_OK, broken: [] });
    expect(run.results.fsck).toEqual({ ok: true, findings: [] });
    const [c] = thp(run.events, 'collapse');
    expect(c).toMatchObject({ pid: 1, addr: HADDR });
    expectV37Order(run.events, c.op!, HADDR, HPAGE);
    // the small pages went after the huge entry was set
    const o = ofOp(run.events, c.op!);
    const set = o.findIndex((e) => e.kind === 'pte.set' && e.pfn === c.pfn);
    const freed = o.filter((e) => e.kind === 'frame.free');
    expect(freed).toHaveLength(4);
    expect(o.indexOf(freed[0])).toBeGreaterThan(set);
    // the HCA's faults after it answer the huge page's subpages
    const after = faults(run.events).filter(
      (f) => f.agent === 'hca0' && run.events.indexOf(f) > run.events.indexOf(c),
    );
    expect(after.length).toBeGreaterThan(0);
    expect(after.every((f) => f.pfn! >= c.pfn! && f.pfn! < c.pfn! + 4)).toBe(true);
  });

  it('collapse_huge_page, v3.6: pmdp_clear_flush_notify under page_table_lock', async () => {
    const run = await runLegacyTwin(
      'examples/seed/collapse_huge_page.yaml',
      'thp-collapse-v36',
      tmp,
    );
    expect(outcomeOf(run), run.log).toEqual(LEGACY_TWIN_OK);
    expect(thp(run.events, 'collapse')).toHaveLength(1);
  });
});

describe.concurrent('examples/inject: the THP injections', () => {
  it('thp-fallback-haddr: the end names the next huge range (paired-range); the MR stays invalidated, its fault gives up', async () => {
    // the example, and after it one more read of the COWed page by the HCA
    const run = await runScenario(
      'examples/inject/thp-fallback-haddr.yaml',
      'thp-haddr',
      tmp,
      (doc) => {
        const steps = doc.get('steps') as { items: unknown[] };
        steps.items.splice(
          steps.items.length - 3,
          0,
          doc.createNode({ op: 'hca.rdma_read', mr: 'mr', page: 3, expectError: 'EAGAIN' }),
        );
      },
    );
    expect(outcomeOf(run), run.log).toEqual({ ...LEGACY_TWIN_OK, broken: ['paired-range'] });
    const [fb] = thp(run.events, 'cow-fallback');
    const o = ofOp(run.events, fb.op!);
    const s = o.find((e): e is EventOf<'mn.range_start'> => e.kind === 'mn.range_start')!;
    const e = o.find((x): x is EventOf<'mn.range_end'> => x.kind === 'mn.range_end')!;
    expect([s.start, s.end]).toEqual([HADDR, HADDR + HPAGE]);
    expect([e.start, e.end]).toEqual([HADDR + HPAGE, HADDR + 2 * HPAGE]);
    // the HCA: its network fault after the COW never completed (the step expected EAGAIN)
    const stuck = run.results.steps[run.results.steps.length - 4];
    expect(stuck.op).toBe('hca.rdma_read');
    expect(stuck.error?.code).toBe('EAGAIN');
    expect(stuck.error?.message).toMatch(/still colliding with invalidations/);
    // (without the injection the same steps are valid: examples/seed/do_huge_pmd_wp_page_fallback.yaml)
  });

  it('thp-single-address: one invalidate_page for the huge page; the HCA reads the old subpage (coherent-reads) and maps it when freed (teardown-before-free)', async () => {
    // the example unchanged: examples.e2e leaves its injected run to this test
    const file = 'examples/inject/thp-single-address.yaml';
    const run = await runScenario(file, 'thp-single', tmp);
    expectInjectionCaught(run, file);
    expect(outcomeOf(run), run.log).toEqual({
      ...LEGACY_TWIN_OK,
      broken: ['teardown-before-free', 'coherent-reads'],
    });
    const [copy] = thp(run.events, 'copy');
    const o = ofOp(run.events, copy.op!);
    // no range: one invalidate_page at the huge page's address
    expect(o.some((e) => e.kind === 'mn.range_start')).toBe(false);
    const pages = o.filter((e): e is EventOf<'mn.page'> => e.kind === 'mn.page');
    expect(pages.map((p) => p.addr)).toEqual([HADDR]);
    // the stale read: the HCA read the old page's 0 where the parent had written 21
    const reads = run.events.filter(
      (e): e is EventOf<'access'> =>
        e.kind === 'access' && e.agent === 'hca0' && e.addr === HADDR + 4096,
    );
    expect(reads.map((r) => r.value)).toEqual([0, 0]);
  });
});
