import { describe, expect, it } from 'vitest';
import { A, B, read, verdictOf, violating, write } from './test-util';

describe('no-stale-access', () => {
  it('passes accesses whose translation gen matches a live frame', () => {
    const v = verdictOf('no-stale-access', [
      write(A, 1, 1, 2),
      read(A, 1, 3, 4, { gen: 2, frameGen: 2 }),
    ]);
    expect(v).toEqual({ name: 'no-stale-access', ok: true, checked: 2, violations: [] });
  });

  it('reports an access through a translation to a reallocated frame', () => {
    const ok = read(A, 0, 1, 2);
    const stale = write(B, 9, 3, 4, { agent: 'hca0', pfn: 12, gen: 3, frameGen: 4 });
    const v = verdictOf('no-stale-access', [ok, stale]);
    expect(v.ok).toBe(false);
    expect(v.checked).toBe(2);
    expect(violating(v)).toEqual([[stale]]);
    expect(v.violations[0].message).toBe(
      'hca0 write of pid 1 at 0x10001000 used a translation to pfn 12 gen 3, but the frame is now gen 4 (reallocated)',
    );
  });

  it('reports an access to a frame on the free list even when the gen still matches', () => {
    const freed = read(A, 0, 1, 2, { frameFree: true });
    const v = verdictOf('no-stale-access', [freed]);
    expect(violating(v)).toEqual([[freed]]);
    expect(v.violations[0].message).toMatch(/the frame is free$/);
  });

  it('orders violations by time whatever the arrival order', () => {
    const late = read(A, 0, 10, 11, { gen: 1, frameGen: 2 });
    const early = read(B, 0, 1, 2, { frameFree: true });
    expect(violating(verdictOf('no-stale-access', [late, early]))).toEqual([[early], [late]]);
  });
});
