/**
 * hugetlbfs (issue 14): the seed's two mm/hugetlb.c hunks as `mmlab run --local` runs them, in
 * both eras — examples/seed/hugetlb_cow.yaml (v3.7 valid; v3.6 sent the range start/end under
 * page_table_lock, where the slow HCA sleeps: exactly no-sleep-under-ptlock) and
 * examples/seed/__unmap_hugepage_range.yaml (outside the lock in both: valid in both) — and the
 * pool itself (POOL_STEPS, after the v3.6 twin of __unmap_hugepage_range, in its lab): values
 * through fork and hugetlb_cow on the CPUs, a COW that reuses the page once the other mapping is
 * gone, SIGBUS when the pool is empty, and the syscalls refused on a hugetlb mapping. Every run
 * ends fsck-clean (mmlab run's fsck).
 *
 * Four labs, one after the other (as the other example files run theirs): under load from other
 * runs, four at once took as long and would stretch every lease.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { EventOf, TraceEvent } from '@mmlab/protocol';
import { parse } from 'yaml';
import {
  LEGACY_TWIN_OK,
  type ScenarioRun,
  outcomeOf,
  runLegacyTwin,
  runScenario,
} from '@mmlab/testing';

const tmp = mkdtempSync(path.join(tmpdir(), 'mmlab-hugetlb-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const PAGE = 4096;
/** hugePageOrder 3 in the examples: a huge page is 8 pages */
const HUGE = 8 * PAGE;

const fsckClean = (r: ScenarioRun) => r.results.fsck;

/**
 * The pool itself (hugetlbPages 2, order 3: pfns 8..23), run after __unmap_hugepage_range's
 * v3.6 twin in the same lab (its pages are back in the pool by then; one lab less): values
 * survive fork and hugetlb_cow on the CPUs, the child's write after the parent's COW reuses the
 * page (mapped once), an empty pool is SIGBUS, the refused syscalls change nothing, and a
 * page unmapped goes back and is allocated again.
 */
const POOL_STEPS = `
  - { op: process.create, as: q }
  - { op: mmap, process: q, pages: 5, prot: rw, flags: [hugetlb], expectError: EINVAL }
  - { op: mmap, process: q, pages: 16, prot: rw, flags: [hugetlb], as: hbuf }
  - { op: cpu.write, cpu: 0, process: q, addr: hbuf, page: 3, value: 3 }
  - { op: cpu.write, cpu: 0, process: q, addr: hbuf, page: 7, value: 7 }
  - { op: fork, process: q, as: qc }
  - { op: cpu.write, cpu: 0, process: q, addr: hbuf, page: 3, value: 33 } # hugetlb_cow: the 2nd page
  - { op: cpu.read, cpu: 0, process: q, addr: hbuf, page: 7, expect: 7 } # copied with the rest
  - { op: cpu.read, cpu: 1, process: qc, addr: hbuf, page: 3, expect: 3 }
  - { op: cpu.read, cpu: 1, process: qc, addr: hbuf, page: 7, expect: 7 }
  - { op: cpu.write, cpu: 1, process: qc, addr: hbuf, page: 7, value: 77 } # mapped once now: reused
  - { op: cpu.read, cpu: 0, process: q, addr: hbuf, page: 7, expect: 7 }
  - { op: cpu.write, cpu: 0, process: q, addr: hbuf, page: 8, value: 8, expectError: SIGBUS }
  - { op: madvise, process: q, addr: hbuf, pages: 8, advice: dontneed, expectError: EINVAL }
  - { op: munmap, process: q, addr: hbuf, pages: 4, expectError: EINVAL }
  - { op: mprotect, process: q, addr: hbuf, pages: 8, prot: r, expectError: EINVAL }
  - { op: cpu.read, cpu: 0, process: q, addr: hbuf, page: 3, expect: 33 }
  - { op: cpu.read, cpu: 1, process: qc, addr: hbuf, page: 7, expect: 77 }
  - { op: munmap, process: qc, addr: hbuf, pages: 16 }
  - { op: cpu.write, cpu: 0, process: q, addr: hbuf, page: 8, value: 8 } # the child's page came back
  - { op: cpu.read, cpu: 1, process: q, addr: hbuf, page: 8, expect: 8 }
  - { op: exit, process: qc }
  - { op: exit, process: q }
`;

function checkPool(run: ScenarioRun): void {
  const how = run.events.filter(
    (e): e is EventOf<'fault.end'> => e.kind === 'fault.end' && e.result === 'ok',
  );
  expect(how.filter((e) => e.how === 'hugetlb-cow')).toHaveLength(1); // the child's write reused
  // every fault was hugetlb_fault's, answering subpages of pool pages (8..23)
  expect(how.length).toBeGreaterThanOrEqual(8);
  expect(how.every((e) => e.how!.startsWith('hugetlb') && e.pfn! >= 8 && e.pfn! <= 23)).toBe(true);
  const sigbus = run.events.filter(
    (e): e is EventOf<'fault.end'> => e.kind === 'fault.end' && e.result === 'SIGBUS',
  );
  expect(sigbus).toHaveLength(1);
}

/** The fault that broke COW of a huge page (fault.end how 'hugetlb-cow'): its op. */
function cowOp(evs: TraceEvent[]): string {
  const f = evs.find(
    (e): e is EventOf<'fault.end'> => e.kind === 'fault.end' && e.how === 'hugetlb-cow',
  );
  expect(f, 'a hugetlb_cow').toBeDefined();
  return f!.op!;
}

describe('examples/seed/hugetlb_cow.yaml: a write to a forked private huge page an ODP MR reads', () => {
  it('v3.7: the huge range is invalidated around page_table_lock, and the HCA re-faults the new page', async () => {
    const run = await runScenario('examples/seed/hugetlb_cow.yaml', 'hugetlb-cow-v37', tmp);
    expect(outcomeOf(run), run.log).toEqual({
      verdict: 'valid',
      code: 0,
      stepsOk: true, // the HCA's 50 after the COW and the child's 5 included
      broken: [],
    });
    expect(fsckClean(run)).toEqual({ ok: true, findings: [] });
    const op = run.events.filter((e) => e.op === cowOp(run.events));
    const start = op.findIndex((e) => e.kind === 'mn.range_start');
    const end = op.findIndex((e) => e.kind === 'mn.range_end');
    const rs = op[start] as EventOf<'mn.range_start'>;
    // the whole huge range, never one address
    expect(rs.end - rs.start).toBe(HUGE);
    expect(rs.start % HUGE).toBe(0);
    expect(op[end]).toMatchObject({ start: rs.start, end: rs.end });
    // huge_ptep_clear_flush + set_huge_pte_at between them, under page_table_lock
    const clear = op.findIndex((e) => e.kind === 'pte.clear');
    const set = op.findIndex((e, i) => i > clear && e.kind === 'pte.set');
    expect(start).toBeLessThan(clear);
    expect(set).toBeLessThan(end);
    expect(op[clear]).toMatchObject({ lock: 'ptl:mm', addr: rs.start });
    // sent with no PT lock held, and the lock re-taken after the end (the caller's)
    const sends = op.filter((e): e is EventOf<'mn.send'> => e.kind === 'mn.send');
    expect(sends.map((s) => [s.callback, s.ptl])).toEqual([
      ['invalidate_range_start', null],
      ['invalidate_range_end', null],
    ]);
    expect(op.slice(end).some((e) => e.kind === 'ptl.acquire' && e.lock === 'ptl:mm')).toBe(true);
    // the HCA's second read faulted the new page's subpage 5: head + 5, of the new page
    const newHead = (op[set] as EventOf<'pte.set'>).pfn;
    const smaps = run.events.filter(
      (e): e is EventOf<'smap.set'> => e.kind === 'smap.set' && e.agent === 'hca0',
    );
    expect(smaps.some((s) => s.pfn === newHead + 5 && s.addr === rs.start + 5 * PAGE)).toBe(true);
  });

  it('v3.6: the range start/end go out under page_table_lock: exactly no-sleep-under-ptlock', async () => {
    const run = await runLegacyTwin('examples/seed/hugetlb_cow.yaml', 'hugetlb-cow-v36', tmp);
    expect(outcomeOf(run), run.log).toEqual(LEGACY_TWIN_OK);
    expect(fsckClean(run)).toEqual({ ok: true, findings: [] });
    const sends = run.events.filter(
      (e): e is EventOf<'mn.send'> => e.kind === 'mn.send' && e.op === cowOp(run.events),
    );
    expect(sends.map((s) => [s.callback, s.ptl])).toEqual([
      ['invalidate_range_start', 'ptl:mm'],
      ['invalidate_range_end', 'ptl:mm'],
    ]);
  });
});

describe('examples/seed/__unmap_hugepage_range.yaml: munmap of hugetlb pages an ODP MR maps', () => {
  /** the HCA's translations dropped before page_table_lock, the pages back in the pool after the end */
  function checkOrder(run: ScenarioRun): void {
    const ev = run.events;
    const munmap = ev.find((e) => e.kind === 'vma.unmap')!.op!;
    const op = ev.filter((e) => e.op === munmap);
    const lock = ev.findIndex((e) => e.op === munmap && e.kind === 'ptl.acquire');
    const unlock = ev.findIndex((e) => e.op === munmap && e.kind === 'ptl.release');
    const ends = ev.flatMap((e, i) => (e.op === munmap && e.kind === 'mn.range_end' ? [i] : []));
    const frees = ev.flatMap((e, i) => (e.op === munmap && e.kind === 'frame.free' ? [i] : []));
    const clears = ev.flatMap((e, i) => (e.kind === 'smap.clear' && e.agent === 'hca0' ? [i] : []));
    // both huge pages cleared under the lock, all their 16 frames back in the pool
    expect(op.filter((e) => e.kind === 'pte.clear').map((e) => e.lock)).toEqual([
      'ptl:mm',
      'ptl:mm',
    ]);
    expect(frees).toHaveLength(16);
    expect(clears.length).toBeGreaterThanOrEqual(2);
    expect(Math.max(...clears)).toBeLessThan(lock);
    // __unmap_hugepage_range's end, after the unlock, before the pages go back
    expect(ends.some((i) => i > unlock && i < Math.min(...frees))).toBe(true);
    const starts = op.filter((e): e is EventOf<'mn.range_start'> => e.kind === 'mn.range_start');
    expect(starts.every((s) => s.start % HUGE === 0 && (s.end - s.start) % HUGE === 0)).toBe(true);
    const sends = op.filter((e): e is EventOf<'mn.send'> => e.kind === 'mn.send');
    expect(sends.length).toBeGreaterThanOrEqual(4);
    expect(sends.every((s) => s.ptl === null)).toBe(true);
  }

  it('v3.7: invalidated over the whole huge range before the lock, freed after the end', async () => {
    const run = await runScenario(
      'examples/seed/__unmap_hugepage_range.yaml',
      'hugetlb-unmap-v37',
      tmp,
    );
    expect(outcomeOf(run), run.log).toEqual({
      verdict: 'valid',
      code: 0,
      stepsOk: true,
      broken: [],
    });
    expect(fsckClean(run)).toEqual({ ok: true, findings: [] });
    checkOrder(run);
  });

  it('v3.6: already outside the lock — nothing reported; then the pool (POOL_STEPS) in the same lab', async () => {
    const run = await runScenario(
      'examples/seed/__unmap_hugepage_range.yaml',
      'hugetlb-unmap-v36',
      tmp,
      (doc) => {
        doc.deleteIn(['config', 'mode']);
        doc.setIn(['config', 'kernel'], 'v3.6');
        doc.setIn(['expect', 'violations'], []);
        for (const st of parse(POOL_STEPS) as unknown[]) doc.addIn(['steps'], doc.createNode(st));
      },
    );
    expect(outcomeOf(run), run.log).toEqual({
      verdict: 'valid',
      code: 0,
      stepsOk: true,
      broken: [],
    });
    expect(fsckClean(run)).toEqual({ ok: true, findings: [] });
    checkOrder(run);
    checkPool(run);
  });
});
