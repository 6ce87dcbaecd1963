import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { TraceEvent } from '@mmlab/protocol';
import { A, B, mk, read, verdictOf, violating, vmaMap, vmaUnmap, write } from './test-util';

const check = (events: TraceEvent[]) => verdictOf('coherent-reads', events);

describe('coherent-reads', () => {
  it('passes a read of the last value written, by another agent', () => {
    const v = check([write(A, 5, 1, 2), write(A, 6, 3, 4), read(A, 6, 5, 6, { agent: 'cpu1' })]);
    expect(v).toEqual({ name: 'coherent-reads', ok: true, checked: 1, violations: [] });
  });

  it('reports a read of a superseded value, with the write it should have seen', () => {
    const w1 = write(A, 5, 1, 2);
    const w2 = write(A, 6, 3, 4, { agent: 'hca0' });
    const r = read(A + 8, 5, 5, 6, { agent: 'cpu1' }); // same page, another offset
    const v = check([w1, w2, r]);
    expect(v.ok).toBe(false);
    expect(violating(v)).toEqual([[r, w2]]);
    expect(v.violations[0].message).toBe(
      'pid 1 page 0x10000000: cpu1 read 5, acceptable: 6 (last written by hca0)',
    );
  });

  it('reads a never-written page as zero', () => {
    const zero = read(A, 0, 1, 2);
    const junk = read(B, 3, 1, 2);
    const v = check([zero, junk]);
    expect(v.checked).toBe(2);
    expect(violating(v)).toEqual([[junk]]);
    expect(v.violations[0].message).toBe(
      'pid 1 page 0x10001000: cpu0 read 3, acceptable: 0 (never written)',
    );
  });

  it('does not check a read that overlaps a write to the same page', () => {
    const v = check([write(A, 5, 1, 2), write(A, 6, 3, 5), read(A, 42, 4, 6), read(A, 42, 5, 6)]);
    expect(v).toMatchObject({ ok: true, checked: 0 });
  });

  it('accepts any of several overlapping last writes, and nothing else', () => {
    const w1 = write(A, 1, 1, 4);
    const w2 = write(A, 2, 2, 3, { agent: 'cpu1' });
    const ok1 = read(A, 1, 5, 6);
    const ok2 = read(A, 2, 5, 6);
    const bad = read(A, 3, 5, 6);
    const v = check([w1, w2, ok1, ok2, bad]);
    expect(v.checked).toBe(3);
    expect(violating(v)).toEqual([[bad, w2, w1]]); // writes in ts order (emitted at tEnd)
    expect(v.violations[0].message).toContain('read 3, acceptable: 1 | 2');
  });

  it('lets a later write supersede overlapping ones', () => {
    const w3 = write(A, 3, 5, 6);
    const stale = read(A, 1, 7, 8);
    const v = check([write(A, 1, 1, 4), write(A, 2, 2, 3), w3, stale, read(A, 3, 7, 8)]);
    expect(violating(v)).toEqual([[stale, w3]]);
  });

  it('keeps pages and processes apart', () => {
    const v = check([
      write(A, 5, 1, 2),
      write(A, 7, 1, 2, { pid: 2 }),
      read(B, 0, 3, 4),
      read(A, 7, 3, 4, { pid: 2 }),
    ]);
    expect(v).toMatchObject({ ok: true, checked: 2 });
  });

  it('resets the page when a vma.unmap/vma.map covers it', () => {
    const unmap = vmaUnmap(A, A + 2 * 4096, 3);
    const map = vmaMap(A, A + 4096, 4);
    const zero = read(A, 0, 5, 6);
    const old = read(A, 5, 5, 6);
    const v = check([write(A, 5, 1, 2), unmap, map, zero, old]);
    expect(v.checked).toBe(2);
    expect(violating(v)).toEqual([[old, map]]);
    expect(v.violations[0].message).toBe(
      'pid 1 page 0x10000000: cpu0 read 5, acceptable: 0 (zeroed by vma.map at 4)',
    );
  });

  it('checks a private file mapping only once the process wrote its copy; a shared one never', () => {
    const fileMap = (ts: number, flags: Array<'shared' | 'private'>) => ({
      ...vmaMap(A, A + 2 * 4096, ts),
      flags,
      file: 3,
      pgoff: 0,
    });
    // private: the file's 41 is read before any write (unknown here: not checked); then the
    // process writes its copy, and a read that lost it is reported
    const before = read(A, 41, 2, 3);
    const lost = read(A, 41, 6, 7);
    const priv = check([fileMap(1, ['private']), before, write(A, 99, 4, 5), lost]);
    expect(priv.checked).toBe(1);
    expect(violating(priv).map((v) => v[0])).toEqual([lost]);
    // shared: the file's page, which write() and other mappings change: not this register
    const shared = check([fileMap(1, ['shared']), write(A, 99, 4, 5), read(A, 41, 6, 7)]);
    expect(shared).toMatchObject({ ok: true, checked: 0 });
    // an anonymous mapping in the same place is checked as ever
    const anon = check([vmaMap(A, A + 4096, 1), write(A, 99, 4, 5), read(A, 41, 6, 7)]);
    expect(anon).toMatchObject({ ok: false, checked: 1 });
  });

  it('zeroes the pages madvise(DONTNEED) drops, and only those', () => {
    const dontneed = mk('madvise', 3, { pid: 1, start: A, end: A + 4096, advice: 'dontneed' });
    const zero = read(A, 0, 5, 6);
    const kept = read(B, 6, 5, 6);
    const stale = read(A, 5, 7, 8);
    const v = check([write(A, 5, 1, 2), write(B, 6, 1, 2), dontneed, zero, kept, stale]);
    expect(v.checked).toBe(3);
    expect(violating(v)).toEqual([[stale, dontneed]]);
  });

  it('does not check a window remap_file_pages pointed at other pages of the object', () => {
    const remap = mk('vma.remap', 3, {
      pid: 1,
      start: A,
      end: A + 4096,
      pgoff: 9,
      nonlinear: true,
    });
    const v = check([write(A, 5, 1, 2), remap, read(A, 77, 5, 6), read(B, 0, 5, 6)]);
    expect(v).toMatchObject({ ok: true, checked: 1 });
    const anon = check([write(A, 5, 1, 2), read(A, 77, 5, 6)]);
    expect(anon).toMatchObject({ ok: false, checked: 1 });
    // nonlinear in a shared mapping: its pages outside the window alias the window's
    const shared = { ...vmaMap(A, A + 2 * 4096, 0), flags: ['shared' as const] };
    const alias = check([shared, write(B, 5, 1, 2), remap, read(B, 66, 5, 6)]);
    expect(alias).toMatchObject({ ok: true, checked: 0 });
  });

  it('keeps the pages of a shared mapping across madvise(DONTNEED): the shmem object has them', () => {
    const shared = { ...vmaMap(A, A + 2 * 4096, 0), flags: ['shared' as const] };
    const dontneed = mk('madvise', 3, { pid: 1, start: A, end: A + 4096, advice: 'dontneed' });
    const kept = read(A, 5, 5, 6);
    const zero = read(A, 0, 7, 8);
    const w = write(A, 5, 1, 2);
    const v = check([shared, w, dontneed, kept, zero]);
    expect(v.checked).toBe(2);
    expect(violating(v)).toEqual([[zero, w]]);
  });

  it('is not reset by a mapping change elsewhere or in another process', () => {
    const v = check([
      write(A, 5, 1, 2),
      vmaUnmap(B, B + 4096, 3),
      vmaUnmap(A, A + 4096, 3, 2),
      read(A, 5, 5, 6),
    ]);
    expect(v).toMatchObject({ ok: true, checked: 1 });
  });

  it('keeps a write that was still in flight when the reset happened', () => {
    const v = check([write(A, 5, 2, 4), vmaUnmap(A, A + 4096, 3), read(A, 5, 5, 6)]);
    expect(v).toMatchObject({ ok: true, checked: 1 });
  });

  it('accepts both the old value and zero when the reset happens during the read', () => {
    const w = write(A, 5, 1, 2);
    const unmap = vmaUnmap(A, A + 4096, 6);
    const bad = read(A, 9, 5, 7);
    const v = check([w, unmap, read(A, 5, 5, 7), read(A, 0, 5, 7), bad]);
    expect(v.checked).toBe(3);
    expect(violating(v)).toEqual([[bad, w]]);
    expect(v.violations[0].message).toContain('acceptable: 0 | 5');
  });

  describe('across fork and mremap', () => {
    const CHILD = 2;
    const fork = (ts: number, op = 'mm-0/fork#1') => ({
      ...mk('process.fork', ts, { pid: 1, child: CHILD }),
      op,
    });
    /** the child's copy of a parent mapping, as the fork emits it (same op) */
    const childMap = (ts: number, flags: Array<'shared'> = [], op = 'mm-0/fork#1') => ({
      ...mk('vma.map', ts, { pid: CHILD, start: A, end: A + 2 * 4096, prot: 'rw', flags }),
      op,
    });
    const move = (from: number, to: number, ts: number, pages = 1, newPages = pages) =>
      mk('vma.move', ts, { pid: 1, from, to, pages, newPages });
    const C = A + 0x100000;

    it('gives the child the parent’s values at the fork, then keeps them apart', () => {
      const v = check([
        write(A, 5, 1, 2),
        fork(3),
        childMap(3.5),
        write(A, 6, 4, 5), // the parent, after the fork
        write(B, 8, 4, 5, { pid: CHILD }), // the child
        read(A, 5, 6, 7, { pid: CHILD }),
        read(A, 6, 6, 7),
        read(B, 8, 6, 7, { pid: CHILD }),
        read(B, 0, 6, 7),
      ]);
      expect(v).toMatchObject({ ok: true, checked: 4 });
    });

    it('reports a child read that lost the value it inherited', () => {
      const w = write(A, 5, 1, 2);
      const bad = read(A, 0, 6, 7, { pid: CHILD });
      const v = check([w, fork(3), childMap(3.5), bad]);
      expect(violating(v)).toEqual([[bad, w]]);
      // a vma.map of the child by another op is a fresh mapping: zero is right
      const fresh = childMap(3.5, [], 'mm-0/mmap#9');
      expect(check([w, fork(3), fresh, bad]).ok).toBe(true);
    });

    it('does not check reads of a MAP_SHARED page shared by fork', () => {
      const v = check([
        write(A, 5, 1, 2),
        fork(3),
        childMap(3.5, ['shared']),
        write(A, 6, 4, 5, { pid: CHILD }),
        read(A, 6, 6, 7), // the parent sees the child's write: not modelled, not checked
        read(A, 6, 6, 7, { pid: CHILD }),
        read(A, 5, 2.5, 2.8), // before the fork: checked
      ]);
      expect(v).toMatchObject({ ok: true, checked: 1 });
    });

    it('moves the values with an mremap, and zeroes the old range and the growth', () => {
      const v = check([
        write(A, 5, 1, 2),
        write(B, 7, 1, 2),
        write(B + 4096, 9, 1, 2), // the page after the old range is not moved
        // an earlier mapping at the new place, gone before the move
        write(C, 9, 2.2, 2.4),
        vmaUnmap(C, C + 4096, 2.5),
        move(A, C, 3, 2, 3),
        read(C, 5, 4, 5),
        read(C + 4096, 7, 4, 5),
        read(C + 2 * 4096, 0, 4, 5),
        read(A, 0, 4, 5),
      ]);
      expect(v).toMatchObject({ ok: true, checked: 4 });
      const lost = read(C, 0, 4, 5);
      const w = write(A, 5, 1, 2);
      expect(violating(check([w, move(A, C, 3), lost]))).toEqual([[lost, w]]);
    });

    it('follows a fork, then an mremap in the child', () => {
      const w = write(A, 5, 1, 2);
      const childMove = { ...move(A, C, 5), pid: CHILD };
      const v = check([w, fork(3), childMap(3.5), childMove, read(C, 5, 6, 7, { pid: CHILD })]);
      expect(v).toMatchObject({ ok: true, checked: 1 });
      const bad = read(C, 9, 6, 7, { pid: CHILD });
      expect(violating(check([w, fork(3), childMap(3.5), childMove, bad]))).toEqual([[bad, w]]);
    });
  });

  it('sorts by ts first: the verdict does not depend on arrival order', () => {
    const w1 = write(A, 5, 1, 2);
    const w2 = write(A, 6, 3, 4);
    const r = read(A, 5, 5, 6);
    expect(violating(check([r, w2, w1]))).toEqual([[r, w2]]);
  });
});

/**
 * A sequential history (no two operations overlap) generated from a model of the memory:
 * a map page → value, zeroed by a remap. Every read returns what the model says.
 */
type Op =
  | { op: 'write'; page: number; value: number; agent: number; dur: number; gap: number }
  | { op: 'read'; page: number; agent: number; dur: number; gap: number }
  | { op: 'remap'; page: number; gap: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    op: fc.constant('write' as const),
    page: fc.nat(2),
    value: fc.integer({ min: -1000, max: 1000 }),
    agent: fc.nat(2),
    dur: fc.nat(5),
    gap: fc.integer({ min: 1, max: 5 }),
  }),
  fc.record({
    op: fc.constant('read' as const),
    page: fc.nat(2),
    agent: fc.nat(2),
    dur: fc.nat(5),
    gap: fc.integer({ min: 1, max: 5 }),
  }),
  fc.record({
    op: fc.constant('remap' as const),
    page: fc.nat(2),
    gap: fc.integer({ min: 1, max: 5 }),
  }),
);

interface History {
  events: TraceEvent[];
  reads: Array<Extract<TraceEvent, { kind: 'access' }>>;
  /** per read: every other value the page ever held before it (overwritten or zeroed) */
  older: number[][];
}

function history(ops: Op[]): History {
  const mem = new Map<number, number>();
  const seen = new Map<number, Set<number>>();
  const events: TraceEvent[] = [];
  const reads: History['reads'] = [];
  const older: number[][] = [];
  let t = 0;
  for (const o of ops) {
    t += o.gap;
    const addr = A + o.page * 4096;
    if (o.op === 'remap') {
      events.push(vmaUnmap(addr, addr + 4096, t), vmaMap(addr, addr + 4096, t + 0.5));
      mem.delete(o.page);
      t += 1;
    } else if (o.op === 'write') {
      events.push(write(addr, o.value, t, t + o.dur, { agent: `cpu${o.agent}` }));
      mem.set(o.page, o.value);
      seen.set(o.page, (seen.get(o.page) ?? new Set([0])).add(o.value));
      t += o.dur;
    } else {
      const r = read(addr, mem.get(o.page) ?? 0, t, t + o.dur, { agent: `cpu${o.agent}` });
      events.push(r);
      reads.push(r);
      older.push([...(seen.get(o.page) ?? [])].filter((v) => v !== r.value));
      t += o.dur;
    }
  }
  return { events, reads, older };
}

describe('coherent-reads against a model register', () => {
  it('passes every sequential history, in any arrival order', () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 60 }), fc.nat(), (ops, seed) => {
        const { events, reads } = history(ops);
        // a deterministic shuffle of the arrival order
        const shuffled = events
          .map((e, i) => ({ e, k: (i * 2654435761 + seed) % 1000003 }))
          .sort((a, b) => a.k - b.k)
          .map((x) => x.e);
        const v = check(shuffled);
        expect(v.violations).toEqual([]);
        expect(v.checked).toBe(reads.length);
      }),
    );
  });

  it('fails exactly the read whose value was changed, to an overwritten value when there is one', () => {
    fc.assert(
      fc.property(
        fc.array(opArb, { maxLength: 60 }).filter((ops) => ops.some((o) => o.op === 'read')),
        fc.nat(),
        fc.nat(),
        (ops, pick, pickValue) => {
          const { events, reads, older } = history(ops);
          const i = pick % reads.length;
          const victim = reads[i];
          const stale =
            older[i].length > 0 ? older[i][pickValue % older[i].length] : victim.value + 1;
          const mutated = { ...victim, value: stale };
          const v = check(events.map((e) => (e === victim ? mutated : e)));
          expect(v.violations).toHaveLength(1);
          expect(v.violations[0].events[0]).toBe(mutated);
        },
      ),
    );
  });
});
