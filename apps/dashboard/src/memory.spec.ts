import { describe, expect, it } from 'vitest';
import { TraceEvent } from '@mmlab/protocol';
import {
  CURVE_POINTS,
  EMPTY_MEMORY,
  LAST_PASSES,
  RATE_WINDOW_MS,
  foldMemory,
  memoryChart,
  memoryView,
} from './memory';

const T0 = 1_700_000_000_000;
let seq = 0;
/** A trace event as a service sends it (checked against its schema). */
const ev = (kind: string, ts: number, fields: Record<string, unknown>): TraceEvent =>
  TraceEvent.parse({
    id: `mm-0:${++seq}`,
    ts: T0 + ts,
    service: 'mm',
    instance: 'mm-0',
    kind,
    ...fields,
  });
const reclaim = (
  ts: number,
  free: number,
  why: 'kswapd' | 'direct' | 'request' = 'kswapd',
  watermarks: { low: number; high: number } | null = { low: 4, high: 8 },
) =>
  ev('reclaim', ts, {
    why,
    scanned: 10 + ts,
    reclaimed: 3,
    referenced: 2,
    pinned: 1,
    free,
    ...(watermarks && { watermarks }),
  });
const page = { pid: 1, addr: 0x10000000, pfn: 5, gen: 2, slot: 1, slotGen: 1 };
const swapOut = (ts: number) => ev('swap.out', ts, page);
const swapIn = (ts: number, cached = false) => ev('swap.in', ts, { ...page, cached });
const fault = (ts: number) => ev('barrier', ts, { tag: 'x' });

describe('the Memory panel model', () => {
  it('a run without reclaim: nothing to show, and the same state back', () => {
    const s = foldMemory(EMPTY_MEMORY, [fault(0), fault(1)]);
    expect(s).toBe(EMPTY_MEMORY);
    expect(memoryView(s, T0 + 2)).toBeNull();
  });

  it('free frames after each pass against the watermarks, swap counts, the last passes newest first', () => {
    const s = foldMemory(EMPTY_MEMORY, [
      fault(0),
      swapOut(1),
      swapOut(2),
      reclaim(3, 6, 'direct'),
      swapOut(4),
      reclaim(5, 9, 'kswapd'),
      swapIn(6, true),
      swapIn(7),
      reclaim(8, 7, 'request', null),
    ]);
    const v = memoryView(s, T0 + 8)!;
    expect(v.curve).toEqual([
      { ts: T0 + 3, free: 6 },
      { ts: T0 + 5, free: 9 },
      { ts: T0 + 8, free: 7 },
    ]);
    // the last pass carries none (no kswapd on that mm): the newest that did
    expect(v.watermarks).toEqual({ low: 4, high: 8 });
    expect(v.passes).toBe(3);
    expect(v.byWhy).toEqual({ kswapd: 1, direct: 1, request: 1 });
    expect([v.swapOut, v.swapIn, v.swapInCached]).toEqual([3, 2, 1]);
    expect(
      v.last.map((p) => [p.why, p.free, p.scanned, p.reclaimed, p.referenced, p.pinned]),
    ).toEqual([
      ['request', 7, 18, 3, 2, 1],
      ['kswapd', 9, 15, 3, 2, 1],
      ['direct', 6, 13, 3, 2, 1],
    ]);
  });

  it('no pass carried watermarks (no kswapd): none drawn', () => {
    const s = foldMemory(EMPTY_MEMORY, [reclaim(1, 3, 'request', null)]);
    const v = memoryView(s, T0 + 1)!;
    expect(v.watermarks).toBeNull();
    expect(memoryChart(v, { width: 200, height: 100, left: 20, bottom: 10 }).rules).toEqual([]);
  });

  it('batches in any order fold to what one batch does; an event sent twice counts once', () => {
    const events = [
      swapOut(1),
      reclaim(2, 5),
      swapIn(3),
      reclaim(4, 6),
      swapOut(5),
      reclaim(6, 2, 'direct'),
    ];
    const whole = foldMemory(EMPTY_MEMORY, events);
    // a later batch holding an older pass, and the stream resuming at the last event's ts
    let parts = foldMemory(EMPTY_MEMORY, [events[0], events[3]]);
    parts = foldMemory(parts, [events[4], events[1], events[2], events[3]]);
    parts = foldMemory(parts, [events[5], events[4], events[5]]);
    expect(memoryView(parts, T0 + 6)).toEqual(memoryView(whole, T0 + 6));
    expect(memoryView(parts, T0 + 6)!.passes).toBe(3);
    expect(memoryView(parts, T0 + 6)!.swapOut).toBe(2);
  });

  it('swap rates over the last RATE_WINDOW_MS, falling to 0 once the lab is idle', () => {
    const outs = Array.from({ length: 10 }, (_, i) => swapOut(10_000 + i * 100));
    const ins = Array.from({ length: 5 }, (_, i) => swapIn(10_000 + i * 100));
    // older swap-outs, out of the window: counted, not in the rate
    const s = foldMemory(EMPTY_MEMORY, [swapOut(0), swapOut(100), ...outs, ...ins]);
    const sec = RATE_WINDOW_MS / 1000;
    const v = memoryView(s, T0 + 11_000)!;
    expect(v.swapOut).toBe(12);
    expect(v.swapOutRate).toBe(10 / sec);
    expect(v.swapInRate).toBe(5 / sec);
    const later = memoryView(s, T0 + 10_900 + RATE_WINDOW_MS)!;
    expect([later.swapOutRate, later.swapInRate]).toEqual([0, 0]);
    expect(later.swapOut).toBe(12);
    // a page's clock behind the lab's does not push the newest events out of the window
    expect(memoryView(s, T0)!.swapOutRate).toBe(10 / sec);
  });

  it('keeps the newest CURVE_POINTS passes for the curve, and counts every pass', () => {
    const n = CURVE_POINTS + 20;
    let s = EMPTY_MEMORY;
    for (let i = 0; i < n; i += 7)
      s = foldMemory(
        s,
        Array.from({ length: Math.min(7, n - i) }, (_, j) => reclaim(i + j, i + j)),
      );
    const v = memoryView(s, T0 + n)!;
    expect(v.passes).toBe(n);
    expect(v.curve).toHaveLength(CURVE_POINTS);
    expect(v.curve[0].free).toBe(20);
    expect(v.curve[CURVE_POINTS - 1].free).toBe(n - 1);
    expect(v.last.map((p) => p.free)).toEqual(
      Array.from({ length: LAST_PASSES }, (_, i) => n - 1 - i),
    );
  });

  it('the chart: time left to right, 0 frames at the bottom, low watermark below high', () => {
    const s = foldMemory(EMPTY_MEMORY, [reclaim(0, 2), reclaim(50, 20), reclaim(100, 10)]);
    const c = memoryChart(memoryView(s, T0 + 100)!, {
      width: 300,
      height: 120,
      left: 30,
      bottom: 14,
    });
    expect(c.spanMs).toBe(100);
    expect(c.dots.map((d) => d.x)).toEqual([30, 163, 296]);
    expect(c.yMax).toBe(23); // above the highest point (20) and the high watermark (8)
    const y = (free: number) => c.plot.y0 - (free / c.yMax) * (c.plot.y0 - c.plot.y1);
    for (const d of c.dots) expect(d.y).toBeCloseTo(y(d.free), 1);
    expect(c.rules.map((r) => [r.level, r.value])).toEqual([
      ['low', 4],
      ['high', 8],
    ]);
    expect(c.rules[0].y).toBeGreaterThan(c.rules[1].y);
    expect(c.points).toBe(c.dots.map((d) => `${d.x},${d.y}`).join(' '));
    // one pass: at the right end
    const one = memoryChart(memoryView(foldMemory(EMPTY_MEMORY, [reclaim(0, 3)]), T0)!, {
      width: 300,
      height: 120,
      left: 30,
      bottom: 14,
    });
    expect(one.dots.map((d) => [d.x, d.free])).toEqual([[296, 3]]);
  });
});
