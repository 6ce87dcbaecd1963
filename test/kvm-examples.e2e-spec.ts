/**
 * The scenarios of examples/kvm/, in both modes, as `mmlab run --local` runs them: each one
 * valid, and what it shows (the COW the guest follows, munmap and mremap of guest memory, two
 * VMs on one process, a slow KVM beside faulting neighbours, v3.6's change_pte under the PT
 * lock) checked in its trace. The KVM service itself and the retry race: kvm.e2e-spec.ts.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { Document } from 'yaml';
import { afterAll, describe, expect, it } from 'vitest';
import type { TraceEvent } from '@mmlab/protocol';
import type { RunResults } from '@mmlab/scenario';
import { runScenario } from '@mmlab/testing';

describe('examples/kvm, in both modes, as mmlab run --local runs them', () => {
  const tmp = mkdtempSync(path.join(tmpdir(), 'mmlab-kvm-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  const run = (file: string, name: string, edit: (doc: Document) => void) =>
    runScenario(file, name, tmp, edit);

  it.each([
    ['patched', 'spin'],
    ['legacy', 'spin'],
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
});
