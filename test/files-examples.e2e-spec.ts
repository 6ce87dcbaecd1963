/**
 * The file and writeback scenarios of examples/seed/ (page_mkclean_one, try_to_unmap_cluster, __xip_unmap), in both modes, as `mmlab run --local` runs them: valid in
 * patched (v3.7: the seed's invalidate_page after the PT lock is dropped); in legacy (v3.6:
 * ptep_clear_flush_notify under the lock) the checker reports no-sleep-under-ptlock where the
 * slow HCA slept in it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { EventOf, TraceEvent } from '@mmlab/protocol';
import { LEGACY_TWIN_OK, outcomeOf, runLegacyTwin, runScenario } from '@mmlab/testing';

const tmp = mkdtempSync(path.join(tmpdir(), 'mmlab-files-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/**
 * Whether agent still held a writable translation of the frame wb writes back when it did: its
 * last smap.set of the frame before wb, writable, with no smap.clear (or smap.flush over it)
 * in between.
 */
function writableSmap(evs: TraceEvent[], agent: string, wb: EventOf<'writeback'>): boolean {
  let writable = false;
  for (const e of evs) {
    if (e === wb) return writable;
    if (e.kind === 'smap.set' && e.agent === agent && e.pfn === wb.pfn && e.gen === wb.gen)
      writable = e.writable;
    else if (e.kind === 'smap.clear' && e.agent === agent && e.pfn === wb.pfn) writable = false;
    else if (e.kind === 'smap.flush' && e.agent === agent) writable = false;
  }
  throw new Error('the writeback is not in the trace');
}

/** The events of op, in trace order. */
const ofOp = (evs: TraceEvent[], op: string) => evs.filter((e) => e.op === op);

/** The index of the last event of evs that pred holds for (-1: none). */
function lastIndex(evs: TraceEvent[], pred: (e: TraceEvent) => boolean): number {
  for (let i = evs.length - 1; i >= 0; i--) if (pred(evs[i])) return i;
  return -1;
}

describe('examples/seed/page_mkclean_one.yaml: msync of a shared file mapping an ODP HCA wrote', () => {
  it('patched: the device write is in the file after msync, its writable mapping taken first', async () => {
    const { code, results, events, log } = await runScenario(
      'examples/seed/page_mkclean_one.yaml',
      'files-mkclean-patched',
      tmp,
    );
    expect(results.verdict, log).toBe('valid');
    expect(code).toBe(0);
    expect(results.steps.every((s) => s.ok)).toBe(true); // file.read's expects included
    const wbs = events.filter(
      (e): e is EventOf<'writeback'> => e.kind === 'writeback' && e.why === 'msync',
    );
    // the first msync wrote the four dirty pages (the HCA's 40, 41, the CPU's 42, write()'s
    // 33), the second the page the HCA wrote again after it (its write faulted: read-only)
    expect(wbs.map((w) => [w.page, w.value])).toEqual([
      [0, 40],
      [1, 41],
      [2, 42],
      [3, 33],
      [0, 50],
    ]);
    for (const wb of wbs) {
      const op = ofOp(events, wb.op!);
      const at = op.indexOf(wb);
      // page_mkclean_one: the PTE write-protected under the PT lock, invalidate_page sent with
      // no lock held (v3.7), the HCA's translation gone and acked — all before the write-back
      const before = op.slice(0, at);
      const set = lastIndex(
        before,
        (e) => e.kind === 'pte.set' && e.pfn === wb.pfn && e.gen === wb.gen && !e.writable,
      );
      const send = lastIndex(
        before,
        (e) => e.kind === 'mn.send' && e.callback === 'invalidate_page' && e.subscriber === 'hca0',
      );
      const ack = lastIndex(
        before,
        (e) => e.kind === 'mn.ack' && e.callback === 'invalidate_page' && e.subscriber === 'hca0',
      );
      expect(set, `${wb.op} page ${wb.page}`).toBeGreaterThanOrEqual(0);
      expect(send).toBeGreaterThan(set);
      expect(ack).toBeGreaterThan(send);
      expect(ack).toBeLessThan(at);
      expect((op[send] as EventOf<'mn.send'>).ptl).toBeNull();
      expect(writableSmap(events, 'hca0', wb), `hca0 maps page ${wb.page} writable`).toBe(false);
    }
    // the private mapping's write was a copy (never written back), and reclaim dropped the
    // clean pages, which file.read then read back from the file's store
    expect(events.some((e) => e.kind === 'fault.end' && e.how === 'file')).toBe(true);
    expect(wbs.some((w) => w.value === 99)).toBe(false);
  });

  it('legacy: v3.6 sends invalidate_page under the PT lock, where the slow HCA sleeps', async () => {
    const run = await runLegacyTwin(
      'examples/seed/page_mkclean_one.yaml',
      'files-mkclean-legacy',
      tmp,
    );
    expect(outcomeOf(run), run.log).toEqual(LEGACY_TWIN_OK);
    const { events } = run;
    const msyncOps = new Set(events.filter((e) => e.kind === 'writeback').map((e) => e.op));
    const sends = events.filter(
      (e): e is EventOf<'mn.send'> =>
        e.kind === 'mn.send' && e.callback === 'invalidate_page' && msyncOps.has(e.op),
    );
    expect(sends.length).toBeGreaterThanOrEqual(5);
    expect(sends.every((s) => typeof s.ptl === 'string' && s.ptl.startsWith('ptl:'))).toBe(true);
  });
});

describe('examples/seed/try_to_unmap_cluster.yaml: reclaim of a nonlinear shmem window an ODP HCA maps', () => {
  /** the reclaim ops that unmapped something (their pte.clear events) */
  const reclaimOps = (evs: TraceEvent[]) =>
    new Set(
      evs.filter((e) => e.kind === 'pte.clear' && e.op?.includes('/reclaim#')).map((e) => e.op!),
    );

  it('patched: the cluster is unmapped inside invalidate_range_start/end sent with no PT lock', async () => {
    const { code, results, events, log } = await runScenario(
      'examples/seed/try_to_unmap_cluster.yaml',
      'files-cluster-patched',
      tmp,
    );
    expect(results.verdict, log).toBe('valid');
    expect(code).toBe(0);
    expect(results.steps.every((s) => s.ok)).toBe(true); // the reads after reclaim included
    expect(events.some((e) => e.kind === 'vma.remap' && e.nonlinear)).toBe(true);
    const ops = reclaimOps(events);
    expect(ops.size).toBeGreaterThan(0);
    for (const op of ops) {
      const evs = ofOp(events, op);
      // the cluster that cleared PTEs: range_start, then its PT lock, the clears, the unlock,
      // and range_end
      const clear = evs.findIndex((e) => e.kind === 'pte.clear');
      const start = lastIndex(evs.slice(0, clear), (e) => e.kind === 'mn.range_start');
      const lock = lastIndex(evs.slice(0, clear), (e) => e.kind === 'ptl.acquire');
      const lastClear = lastIndex(evs, (e) => e.kind === 'pte.clear');
      const unlock = evs.findIndex((e, i) => i > lastClear && e.kind === 'ptl.release');
      const end = evs.findIndex((e, i) => i > lastClear && e.kind === 'mn.range_end');
      expect([start, lock, clear, unlock, end].every((i) => i >= 0)).toBe(true);
      expect(start).toBeLessThan(lock);
      expect(unlock).toBeLessThan(end);
      // the range covers every PTE the cluster cleared
      const range = evs[start] as EventOf<'mn.range_start'>;
      for (const c of evs.filter((e): e is EventOf<'pte.clear'> => e.kind === 'pte.clear'))
        expect(c.addr >= range.start && c.addr < range.end, `0x${c.addr.toString(16)}`).toBe(true);
      expect(evs.some((e) => e.kind === 'mn.send' && e.callback === 'invalidate_page')).toBe(false);
    }
    // reclaimed through shmem_writepage: the window's pages went to swap and were freed
    expect(events.some((e) => e.kind === 'frame.free' && ops.has(e.op!))).toBe(true);
  });

  it('legacy: v3.6 sends invalidate_page for each PTE under the PT lock', async () => {
    const run = await runLegacyTwin(
      'examples/seed/try_to_unmap_cluster.yaml',
      'files-cluster-legacy',
      tmp,
    );
    expect(outcomeOf(run), run.log).toEqual(LEGACY_TWIN_OK);
    const { events } = run;
    const ops = reclaimOps(events);
    const sends = events.filter(
      (e): e is EventOf<'mn.send'> =>
        e.kind === 'mn.send' && e.callback === 'invalidate_page' && ops.has(e.op!),
    );
    expect(sends.length).toBeGreaterThanOrEqual(4);
    expect(sends.every((s) => typeof s.ptl === 'string' && s.ptl.startsWith('ptl:'))).toBe(true);
    expect(events.some((e) => e.kind === 'mn.range_start' && ops.has(e.op!))).toBe(false);
  });
});

describe('examples/seed/__xip_unmap.yaml: __xip_unmap takes the sparse page from a CPU and an ODP HCA', () => {
  /** The xip.unmap events: one per PTE __xip_unmap took the sparse page from. */
  const xipUnmaps = (evs: TraceEvent[]) =>
    evs.filter((e): e is EventOf<'xip.unmap'> => e.kind === 'xip.unmap');

  it('patched: invalidate_page after the PT lock, the sparse page released after the ack', async () => {
    const { code, results, events, log } = await runScenario(
      'examples/seed/__xip_unmap.yaml',
      'files-xip-patched',
      tmp,
    );
    expect(results.verdict, log).toBe('valid');
    expect(code).toBe(0);
    expect(results.steps.every((s) => s.ok)).toBe(true); // the reads' expects included
    const unmaps = xipUnmaps(events);
    // both call sites, each on p's PTE of the page that got its block: file.write of page 0
    // (__xip_file_write) and q's read fault of page 1 in its shared writable mapping
    // (xip_file_fault)
    expect(unmaps.map((u) => [u.page, /\/(file|fault)#/.exec(u.op!)?.[1]])).toEqual([
      [0, 'file'],
      [1, 'fault'],
    ]);
    const sparse = { pfn: unmaps[0].pfn, gen: unmaps[0].gen };
    expect(unmaps[1]).toMatchObject(sparse);
    for (const u of unmaps) {
      const op = ofOp(events, u.op!);
      const at = op.indexOf(u);
      const alloc = op.findIndex((e) => e.kind === 'frame.alloc' && e.pfn !== sparse.pfn);
      const clear = op.findIndex(
        (e) =>
          e.kind === 'pte.clear' && e.pid === u.pid && e.addr === u.addr && e.pfn === sparse.pfn,
      );
      const release = op.findIndex((e, i) => i > clear && e.kind === 'ptl.release');
      const send = op.findIndex(
        (e) => e.kind === 'mn.send' && e.callback === 'invalidate_page' && e.subscriber === 'hca0',
      );
      const ack = op.findIndex(
        (e) => e.kind === 'mn.ack' && e.callback === 'invalidate_page' && e.subscriber === 'hca0',
      );
      // the block first (get_xip_mem create), then under the PT lock the PTE cleared, the lock
      // dropped, invalidate_page sent with no lock held and acked, and only then the PTE's
      // reference of the sparse page released
      expect(alloc, u.op).toBeGreaterThanOrEqual(0);
      expect(clear).toBeGreaterThan(alloc);
      expect(release).toBeGreaterThan(clear);
      expect(send).toBeGreaterThan(release);
      expect((op[send] as EventOf<'mn.send'>).ptl).toBeNull();
      expect(ack).toBeGreaterThan(send);
      expect(at).toBeGreaterThan(ack);
    }
    // the sparse page is never freed; an XIP file is never written back
    expect(events.some((e) => e.kind === 'frame.free' && e.pfn === sparse.pfn)).toBe(false);
    expect(events.some((e) => e.kind === 'writeback')).toBe(false);
  });

  it('legacy: v3.6 sends invalidate_page under the PT lock, where the slow HCA sleeps', async () => {
    const run = await runLegacyTwin('examples/seed/__xip_unmap.yaml', 'files-xip-legacy', tmp);
    expect(outcomeOf(run), run.log).toEqual(LEGACY_TWIN_OK);
    const { events } = run;
    const unmaps = xipUnmaps(events);
    expect(unmaps.map((u) => u.page)).toEqual([0, 1]);
    for (const u of unmaps) {
      const op = ofOp(events, u.op!);
      const send = op.findIndex(
        (e) => e.kind === 'mn.send' && e.callback === 'invalidate_page' && e.subscriber === 'hca0',
      );
      const release = op.findIndex((e) => e.kind === 'ptl.release');
      const ptl = (op[send] as EventOf<'mn.send'>).ptl;
      expect(typeof ptl === 'string' && ptl.startsWith('ptl:'), u.op).toBe(true);
      // the lock is dropped only after the HCA's ack, and the release comes after it too
      const ack = op.findIndex((e) => e.kind === 'mn.ack' && e.callback === 'invalidate_page');
      expect(release).toBeGreaterThan(ack);
      expect(op.indexOf(u)).toBeGreaterThan(release);
    }
  });
});
