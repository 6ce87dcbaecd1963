/**
 * The Memory panel's model (issue 13: reclaim in the live dashboard), from the trace as it
 * streams in: the frames free after each reclaim pass (`reclaim`, one per shrink_page_list
 * pass) against kswapd's watermarks (the pass's `watermarks`), the pages swapped out and in
 * (`swap.out`, `swap.in`: counts, and rates over the last RATE_WINDOW_MS of the trace), and the
 * last passes (who ran them, and what came of them).
 *
 * Pure: no DOM, no clock (the caller passes the time), the state never mutated; the dashboard
 * folds each batch of events in (foldMemory) and draws memoryView/memoryChart. The run report
 * draws the same curve from a whole trace (apps/lab/src/report/plots.ts, memory.svg).
 *
 * Bounded: the curve keeps the newest CURVE_POINTS passes, the rates the swap events of the
 * last RATE_WINDOW_MS; the counts are of everything seen since the page loaded or the trace was
 * cleared. An event seen twice (a reconnecting stream resumes at the last event's ts, so it
 * sends that event again) is counted once while it is among those kept.
 */
import type { EventOf, TraceEvent } from '@mmlab/protocol';

/** Passes the curve keeps (the newest). */
export const CURVE_POINTS = 300;
/** Passes listed. */
export const LAST_PASSES = 5;
/** Swap rates are over this much of the trace, up to now. */
export const RATE_WINDOW_MS = 5000;

export type ReclaimWhy = EventOf<'reclaim'>['why'];
export const RECLAIM_WHY: readonly ReclaimWhy[] = ['kswapd', 'direct', 'request'];

export interface Watermarks {
  low: number;
  high: number;
}

/** One reclaim pass, as its `reclaim` event tells it. */
export interface ReclaimPass {
  id: string;
  ts: number;
  instance: string;
  why: ReclaimWhy;
  scanned: number;
  reclaimed: number;
  referenced: number;
  pinned: number;
  /** frames free when the pass ended */
  free: number;
}

interface RecentSwap {
  id: string;
  ts: number;
  dir: 'out' | 'in';
}

export interface MemoryState {
  /** the newest passes (at most CURVE_POINTS), in ts order */
  readonly passes: readonly ReclaimPass[];
  /** passes seen, by who ran them */
  readonly byWhy: Readonly<Record<ReclaimWhy, number>>;
  /** from the newest pass that carries them; null: none did (no kswapd) */
  readonly watermarks: Watermarks | null;
  readonly watermarksTs: number;
  readonly swapOut: number;
  readonly swapIn: number;
  /** swap-ins found in the swap cache (no read from the slot) */
  readonly swapInCached: number;
  /** the swap events within RATE_WINDOW_MS of newestTs, in arrival order */
  readonly recent: readonly RecentSwap[];
  /** the newest ts of any event folded in */
  readonly newestTs: number;
}

export const EMPTY_MEMORY: MemoryState = {
  passes: [],
  byWhy: { kswapd: 0, direct: 0, request: 0 },
  watermarks: null,
  watermarksTs: -Infinity,
  swapOut: 0,
  swapIn: 0,
  swapInCached: 0,
  recent: [],
  newestTs: -Infinity,
};

const isMemoryEvent = (
  e: TraceEvent,
): e is EventOf<'reclaim'> | EventOf<'swap.out'> | EventOf<'swap.in'> =>
  e.kind === 'reclaim' || e.kind === 'swap.out' || e.kind === 'swap.in';

/**
 * The state with `events` folded in (any order). The same state object when none of them is a
 * reclaim or swap event (so a caller can tell nothing changed).
 */
export function foldMemory(s: MemoryState, events: readonly TraceEvent[]): MemoryState {
  let newestTs = s.newestTs;
  const mine: Array<EventOf<'reclaim'> | EventOf<'swap.out'> | EventOf<'swap.in'>> = [];
  for (const e of events) {
    if (e.ts > newestTs) newestTs = e.ts;
    if (isMemoryEvent(e)) mine.push(e);
  }
  if (mine.length === 0) return s;

  const known = new Set<string>();
  for (const p of s.passes) known.add(p.id);
  for (const r of s.recent) known.add(r.id);
  const passes = [...s.passes];
  const byWhy = { ...s.byWhy };
  let { watermarks, watermarksTs, swapOut, swapIn, swapInCached } = s;
  const recent = [...s.recent];
  for (const e of mine) {
    if (known.has(e.id)) continue;
    known.add(e.id);
    if (e.kind === 'reclaim') {
      byWhy[e.why]++;
      passes.push({
        id: e.id,
        ts: e.ts,
        instance: e.instance,
        why: e.why,
        scanned: e.scanned,
        reclaimed: e.reclaimed,
        referenced: e.referenced,
        pinned: e.pinned,
        free: e.free,
      });
      if (e.watermarks && e.ts >= watermarksTs) {
        watermarks = { low: e.watermarks.low, high: e.watermarks.high };
        watermarksTs = e.ts;
      }
    } else if (e.kind === 'swap.out') {
      swapOut++;
      recent.push({ id: e.id, ts: e.ts, dir: 'out' });
    } else {
      swapIn++;
      if (e.cached) swapInCached++;
      recent.push({ id: e.id, ts: e.ts, dir: 'in' });
    }
  }
  passes.sort((a, b) => a.ts - b.ts);
  return {
    passes: passes.length > CURVE_POINTS ? passes.slice(-CURVE_POINTS) : passes,
    byWhy,
    watermarks,
    watermarksTs,
    swapOut,
    swapIn,
    swapInCached,
    recent: recent.filter((r) => r.ts > newestTs - RATE_WINDOW_MS),
    newestTs,
  };
}

export interface MemoryView {
  /** reclaim passes seen */
  passes: number;
  byWhy: Readonly<Record<ReclaimWhy, number>>;
  watermarks: Watermarks | null;
  /** free frames after each kept pass, in ts order */
  curve: Array<{ ts: number; free: number }>;
  swapOut: number;
  swapIn: number;
  swapInCached: number;
  /** per second, over the RATE_WINDOW_MS before now */
  swapOutRate: number;
  swapInRate: number;
  /** the last passes, newest first */
  last: ReclaimPass[];
}

/**
 * What the panel shows at `now` (ms, the trace's clock: ms since the epoch); null when nothing
 * was reclaimed or swapped (a run without reclaim: the panel says so in one line).
 */
export function memoryView(s: MemoryState, now: number): MemoryView | null {
  if (s.passes.length === 0 && s.swapOut === 0 && s.swapIn === 0) return null;
  // a clock behind the lab's must not count the newest events out of the window
  const end = Math.max(now, s.newestTs);
  const rate = (dir: 'out' | 'in') =>
    s.recent.filter((r) => r.dir === dir && r.ts > end - RATE_WINDOW_MS).length /
    (RATE_WINDOW_MS / 1000);
  return {
    passes: RECLAIM_WHY.reduce((n, w) => n + s.byWhy[w], 0),
    byWhy: s.byWhy,
    watermarks: s.watermarks,
    curve: s.passes.map((p) => ({ ts: p.ts, free: p.free })),
    swapOut: s.swapOut,
    swapIn: s.swapIn,
    swapInCached: s.swapInCached,
    swapOutRate: rate('out'),
    swapInRate: rate('in'),
    last: s.passes.slice(-LAST_PASSES).reverse(),
  };
}

export interface ChartBox {
  width: number;
  height: number;
  /** room left of the plot (the y labels) and below it (the time label) */
  left: number;
  bottom: number;
}

export interface MemoryChart {
  /** the free-frame curve: an SVG polyline's points */
  points: string;
  /** one dot per pass */
  dots: Array<{ x: number; y: number; free: number }>;
  /** the watermarks as horizontal rules */
  rules: Array<{ level: 'low' | 'high'; value: number; y: number }>;
  /** the y axis runs from 0 to yMax frames */
  yMax: number;
  /** the time the x axis spans, ms (0: one pass) */
  spanMs: number;
  /** where the plot area is */
  plot: { x0: number; x1: number; y0: number; y1: number };
}

/**
 * The curve in a box: time left to right (the kept passes), free frames bottom (0) to top
 * (a little above the highest of the curve and the high watermark).
 */
export function memoryChart(v: MemoryView, box: ChartBox): MemoryChart {
  const x0 = box.left;
  const x1 = box.width - 4;
  const y0 = box.height - box.bottom; // the 0 line
  const y1 = 6;
  const top = Math.max(1, v.watermarks?.high ?? 0, ...v.curve.map((p) => p.free));
  const yMax = Math.ceil(top * 1.15);
  const first = v.curve[0]?.ts ?? 0;
  const spanMs = v.curve.length > 1 ? v.curve[v.curve.length - 1].ts - first : 0;
  const round = (n: number) => Math.round(n * 10) / 10;
  const y = (free: number) => round(y0 - (free / yMax) * (y0 - y1));
  // one pass (or all at one time): at the right end, where the newest goes
  const x = (ts: number) => round(spanMs > 0 ? x0 + ((ts - first) / spanMs) * (x1 - x0) : x1);
  const dots = v.curve.map((p) => ({ x: x(p.ts), y: y(p.free), free: p.free }));
  const rules = v.watermarks
    ? (['low', 'high'] as const).map((level) => ({
        level,
        value: v.watermarks![level],
        y: y(v.watermarks![level]),
      }))
    : [];
  return {
    points: dots.map((d) => `${d.x},${d.y}`).join(' '),
    dots,
    rules,
    yMax,
    spanMs,
    plot: { x0, x1, y0, y1 },
  };
}
