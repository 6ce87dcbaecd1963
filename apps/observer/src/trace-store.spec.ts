import { describe, expect, it } from 'vitest';
import type { TraceEvent } from '@mmlab/protocol';
import { TraceStore } from './trace-store';

let seq = 0;
const barrier = (ts: number, instance = 'mm-0'): TraceEvent => ({
  id: `${instance}:${++seq}`,
  ts,
  service: 'mm',
  instance,
  kind: 'barrier',
  tag: `b${ts}`,
});
const create = (ts: number, pid: number, op?: string): TraceEvent => ({
  id: `mm-0:${++seq}`,
  ts,
  service: 'mm',
  instance: 'mm-0',
  op,
  kind: 'process.create',
  pid,
});
const tsOf = (es: TraceEvent[]) => es.map((e) => e.ts);

describe('TraceStore', () => {
  it('keeps events in arrival order and counts them by kind', () => {
    const s = new TraceStore(10);
    [barrier(3), create(1, 7), barrier(2)].forEach((e) => s.add(e));
    expect(s.size).toBe(3);
    expect(tsOf(s.all())).toEqual([3, 1, 2]);
    expect(s.byKind()).toEqual({ barrier: 2, 'process.create': 1 });
    expect(s.dropped).toBe(0);
  });

  it('drops the oldest beyond its cap, counting drops and fixing the per-kind counts', () => {
    const s = new TraceStore(3);
    s.add(create(1, 1));
    for (let ts = 2; ts <= 7; ts++) s.add(barrier(ts));
    expect(s.size).toBe(3);
    expect(s.dropped).toBe(4);
    expect(tsOf(s.all())).toEqual([5, 6, 7]);
    expect(s.byKind()).toEqual({ barrier: 3 });
    expect(tsOf(s.query({}, 1, 10).events)).toEqual([6, 7]);
  });

  it('filters by kind, pid, instance, op and an inclusive ts range, then pages', () => {
    const s = new TraceStore(100);
    const es = [
      create(1, 1, 'op-a'),
      create(2, 2),
      barrier(3, 'cpu0'),
      create(4, 1, 'op-a'),
      barrier(5),
      create(6, 1),
    ];
    es.forEach((e) => s.add(e));
    expect(tsOf(s.query({ pid: 1 }, 0, 10).events)).toEqual([1, 4, 6]);
    expect(tsOf(s.query({ kinds: ['barrier'] }, 0, 10).events)).toEqual([3, 5]);
    expect(
      tsOf(s.query({ kinds: ['barrier', 'process.create'], instance: 'cpu0' }, 0, 10).events),
    ).toEqual([3]);
    expect(tsOf(s.query({ op: 'op-a' }, 0, 10).events)).toEqual([1, 4]);
    expect(tsOf(s.query({ from: 2, to: 5 }, 0, 10).events)).toEqual([2, 3, 4, 5]);
    expect(s.query({ pid: 1 }, 1, 1)).toEqual({ total: 3, offset: 1, events: [es[3]] });
    expect(s.query({ pid: 1 }, 5, 10)).toEqual({ total: 3, offset: 5, events: [] });
    expect(s.query({}, 0, 0)).toEqual({ total: 6, offset: 0, events: [] });
  });

  it('clears everything, drops included', () => {
    const s = new TraceStore(2);
    [1, 2, 3].forEach((ts) => s.add(barrier(ts)));
    expect(s.clear()).toBe(2);
    expect([s.size, s.dropped, s.all(), s.byKind()]).toEqual([0, 0, [], {}]);
    s.add(barrier(9));
    expect(tsOf(s.all())).toEqual([9]);
  });

  it('refuses a cap that cannot hold an event', () => {
    expect(() => new TraceStore(0)).toThrow(RangeError);
  });
});
