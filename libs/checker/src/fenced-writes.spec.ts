import { describe, expect, it } from 'vitest';
import { acquire, pteClear, pteReject, pteSet, release, verdictOf, violating } from './test-util';

const L = 'ptl:0';

describe('fenced-writes', () => {
  it('passes writes made by the current holder of each lease', () => {
    const v = verdictOf('fenced-writes', [
      acquire(L, 1, 1),
      pteSet(L, 1, 2),
      release(L, 1, 3, 2),
      acquire(L, 2, 4, 'mm-1'),
      pteClear(L, 2, 5),
    ]);
    expect(v).toEqual({ name: 'fenced-writes', ok: true, checked: 2, violations: [] });
  });

  it('reports a write accepted from a holder whose lease was taken over', () => {
    const takeover = acquire(L, 4, 3, 'mm-1');
    const set = pteSet(L, 3, 4);
    const clear = pteClear(L, 3, 5);
    const v = verdictOf('fenced-writes', [
      acquire(L, 3, 1),
      takeover,
      set,
      clear,
      acquire(L, 5, 6),
    ]);
    expect(v.ok).toBe(false);
    expect(v.checked).toBe(2);
    expect(violating(v)).toEqual([
      [set, takeover],
      [clear, takeover],
    ]);
    expect(v.violations[0].message).toBe(
      'pte.set of pid 1 at 0x10000000 under ptl:0 was accepted with token 3, 1 ms after token 4 was granted to mm-1',
    );
  });

  it('excuses a write whose lease was released still held (set-and-unlock reported late), not one whose lease was lost', () => {
    // Redis ran set+unlock of token 3, then the acquire of token 4; the replies were handled
    // the other way round
    const late = [acquire(L, 3, 1), acquire(L, 4, 2, 'mm-1'), pteSet(L, 3, 3), release(L, 3, 3, 2)];
    expect(verdictOf('fenced-writes', late)).toMatchObject({ ok: true, checked: 1 });
    const lost = { ...release(L, 3, 3, 2), released: false };
    const set = pteSet(L, 3, 3);
    const takeover = acquire(L, 4, 2, 'mm-1');
    expect(violating(verdictOf('fenced-writes', [acquire(L, 3, 1), takeover, set, lost]))).toEqual([
      [set, takeover],
    ]);
  });

  it('counts pte.reject as checked, never as a violation', () => {
    const v = verdictOf('fenced-writes', [acquire(L, 3, 1), acquire(L, 4, 3), pteReject(L, 3, 4)]);
    expect(v).toMatchObject({ ok: true, checked: 1 });
  });

  it('does not check atomic (token null) writes', () => {
    const v = verdictOf('fenced-writes', [
      acquire(L, 9, 1),
      pteSet(L, null, 2),
      pteClear(L, null, 3),
    ]);
    expect(v).toMatchObject({ ok: true, checked: 0 });
  });

  it('only counts acquires strictly before the write, on the same pid and lock', () => {
    const v = verdictOf('fenced-writes', [
      acquire(L, 3, 1),
      acquire(L, 4, 2), // same ts as the write: not before it
      acquire('ptl:1', 7, 1),
      acquire(L, 8, 1, 'mm-1', 2),
      pteSet(L, 3, 2),
    ]);
    expect(v).toMatchObject({ ok: true, checked: 1 });
  });

  it('sorts by ts first: a takeover that arrives late still counts', () => {
    const takeover = acquire(L, 4, 2);
    const set = pteSet(L, 3, 3);
    expect(violating(verdictOf('fenced-writes', [set, acquire(L, 3, 1), takeover]))).toEqual([
      [set, takeover],
    ]);
  });
});
