import { describe, expect, it } from 'vitest';
import { SpteTable } from './spte';

const page = (pfn: number, writable = true) => ({
  pfn,
  gen: 1,
  writable,
  accessed: true,
  hva: 0x1000 * pfn,
});

describe('SpteTable (a VM shadow page table with mmu_valid_gen)', () => {
  it('installs, reports a replacement, keeps an identical entry, counts the valid ones', () => {
    const t = new SpteTable();
    expect(t.set(3, page(10, false))).toEqual({ changed: true });
    expect(t.set(3, page(10, false)).changed).toBe(false);
    const up = t.set(3, page(11));
    expect(up).toMatchObject({ changed: true, prev: { pfn: 10, writable: false } });
    expect(t.get(3)).toMatchObject({ pfn: 11, writable: true, mmuGen: 0 });
    expect(t.validCount).toBe(1);
    expect(t.clear(3)?.pfn).toBe(11);
    expect(t.clear(3)).toBeUndefined();
    expect(t.validCount).toBe(0);
  });

  it('clears gfn ranges end-exclusive in gfn order, walking gfns or entries', () => {
    const t = new SpteTable();
    for (const g of [9, 2, 5, 7, 1000]) t.set(g, page(g));
    expect(t.clearRange(4, 8).map(([g]) => g)).toEqual([5, 7]);
    expect(t.clearRange(0, 1_000_000).map(([g]) => g)).toEqual([2, 9, 1000]);
    expect(t.size).toBe(0);
  });

  it('bumpGen invalidates every entry at once; stale ones never translate and go lazily', () => {
    const t = new SpteTable();
    for (let g = 0; g < 100; g++) t.set(g, page(g));
    expect(t.bumpGen()).toBe(100);
    expect(t.validGen).toBe(1);
    expect(t.validCount).toBe(0);
    expect(t.get(5)).toBeUndefined();
    expect(t.validIn(0, 100)).toEqual([]);
    // a stale entry is neither reported by a zap nor as the previous entry of an install
    expect(t.clearRange(0, 10)).toEqual([]);
    expect(t.set(20, page(42))).toEqual({ changed: true });
    expect(t.get(20)).toMatchObject({ pfn: 42, mmuGen: 1 });
    expect(t.staleCount).toBe(89);
    expect(t.reclaimStale(50)).toBe(50);
    expect(t.reclaimStale(1000)).toBe(39);
    expect(t.size).toBe(1);
    expect(t.validCount).toBe(1);
  });
});
