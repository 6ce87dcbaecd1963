import { describe, expect, it } from 'vitest';
import { Mtt } from './mtt';

describe('Mtt (the device translation table)', () => {
  it('installs, reports replacements, and keeps an identical translation', () => {
    const t = new Mtt();
    expect(t.set(10, { pfn: 5, gen: 1, writable: false })).toEqual({ changed: true });
    const same = t.set(10, { pfn: 5, gen: 1, writable: false });
    expect(same.changed).toBe(false);
    const up = t.set(10, { pfn: 5, gen: 1, writable: true });
    expect(up.changed).toBe(true);
    expect(up.prev).toMatchObject({ pfn: 5, gen: 1, writable: false });
    expect(t.get(10)).toEqual({ pfn: 5, gen: 1, writable: true });
    expect(t.size).toBe(1);
  });

  it('clears one entry and ranges, end exclusive, in vpn order, whichever way it iterates', () => {
    const t = new Mtt();
    for (const v of [7, 3, 5, 9, 100]) t.set(v, { pfn: v, gen: 1, writable: true });
    expect(t.clear(100)?.pfn).toBe(100);
    expect(t.clear(100)).toBeUndefined();
    // a narrow range (walks the vpns) and a wide one (walks the entries)
    expect(t.clearRange(4, 8).map(([v]) => v)).toEqual([5, 7]);
    expect(t.clearRange(0, 1_000_000).map(([v]) => v)).toEqual([3, 9]);
    expect(t.size).toBe(0);
  });
});
