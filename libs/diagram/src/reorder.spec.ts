import { describe, expect, it } from 'vitest';
import type { TraceEvent } from '@mmlab/protocol';
import { ReorderBuffer } from './reorder';

const ev = (id: string, ts: number): TraceEvent => ({
  id,
  ts,
  service: 'mm',
  instance: 'mm-0',
  kind: 'barrier',
  tag: id,
});

describe('ReorderBuffer', () => {
  it('holds events back until newer ones arrive, then releases them in ts order', () => {
    const r = new ReorderBuffer(50);
    r.add([ev('b', 120), ev('a', 100)]);
    expect(r.take()).toEqual([]);
    r.add([ev('d', 175), ev('c', 110)]);
    expect(r.take().map((e) => e.id)).toEqual(['a', 'c', 'b']);
    expect(r.size).toBe(1);
    expect(r.take(true).map((e) => e.id)).toEqual(['d']);
    expect(r.size).toBe(0);
  });

  it('clear() forgets pending events', () => {
    const r = new ReorderBuffer(0);
    r.add([ev('a', 1)]);
    r.clear();
    expect(r.take(true)).toEqual([]);
  });
});
