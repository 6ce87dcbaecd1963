/**
 * The run report's plots: their data, taken from the trace, their Vega-Lite specs, and the
 * rendering of a spec to SVG in Node (a headless vega View, renderer 'none').
 *
 *   latency.svg   fault latency (fault.end durMs) and invalidation latency (mn.ack waitedMs,
 *                 per callback) over time since the run started, chaos windows shaded
 *   ptl-hold.svg  distribution of PT-lock hold times (ptl.release heldMs) per mode
 *   memory.svg    free frames against kswapd's watermarks, pages swapped out and in (only for
 *                 a run that reclaimed)
 */
import type { TraceEvent } from '@mmlab/protocol';
import type * as Vega from 'vega';
import type * as VegaLite from 'vega-lite/build/index';

export type Series = 'fault' | 'invalidation';

/** One latency sample: t seconds after the run started, ms of latency. */
export interface LatencyPoint {
  t: number;
  ms: number;
  series: Series;
  /** who waited: the faulting agent, or the subscriber the callback went to */
  who: string;
  /** what: the fault's access and outcome, or the callback */
  what: string;
}

/** A time span shaded on the latency plot, in ms since the epoch (event time). */
export interface ChaosWindow {
  start: number;
  end: number;
  label: string;
}

export interface HoldSample {
  mode: string;
  heldMs: number;
}

/**
 * Latency samples, one per fault.end and per mn.ack, at the time the latency was measured
 * (the event's ts), relative to `t0` (ms since the epoch).
 */
export function latencyPoints(events: readonly TraceEvent[], t0: number): LatencyPoint[] {
  const out: LatencyPoint[] = [];
  for (const e of events) {
    if (e.kind === 'fault.end')
      out.push({
        t: (e.ts - t0) / 1000,
        ms: e.durMs,
        series: 'fault',
        who: e.agent,
        what: `${e.access} ${e.result === 'ok' ? (e.how ?? 'ok') : e.result}`,
      });
    else if (e.kind === 'mn.ack')
      out.push({
        t: (e.ts - t0) / 1000,
        ms: e.waitedMs,
        series: 'invalidation',
        who: e.subscriber,
        what: e.callback,
      });
  }
  return out;
}

export function holdSamples(events: readonly TraceEvent[], mode: string): HoldSample[] {
  const out: HoldSample[] = [];
  for (const e of events) if (e.kind === 'ptl.release') out.push({ mode, heldMs: e.heldMs });
  return out;
}

type Raw = Record<string, unknown>;
const isRecord = (x: unknown): x is Raw => typeof x === 'object' && x !== null;
const num = (x: unknown): number | undefined =>
  typeof x === 'number' && Number.isFinite(x) ? x : undefined;
const str = (x: unknown): string | undefined => (typeof x === 'string' ? x : undefined);

/**
 * Chaos windows from events of kind `chaos.*` (raw events: chaos kinds are not part of the
 * TraceEvent contract yet, and may carry fields it does not know). Two shapes are read:
 *   - one event with a duration (`durMs` or `ms`): the window [ts, ts + duration];
 *   - a `chaos.<action>.start` (or `.begin`) and the next `chaos.<action>.end` (or `.stop`)
 *     with the same target (`target`, `name` or `fault`): the window between them; a start
 *     never ended lasts until `runEnd`.
 * Any other `chaos.*` event is an instant (start = end). The label is the event's `label`, or
 * the action and its target.
 */
export function chaosWindows(raw: readonly unknown[], runEnd: number): ChaosWindow[] {
  const out: ChaosWindow[] = [];
  const open = new Map<string, { start: number; label: string }>();
  const events = raw
    .filter(isRecord)
    .filter((e) => str(e.kind)?.startsWith('chaos.') && num(e.ts) !== undefined)
    .sort((a, b) => num(a.ts)! - num(b.ts)!);
  for (const e of events) {
    const kind = str(e.kind)!;
    const ts = num(e.ts)!;
    const m = /^(chaos\..+)\.(start|begin|end|stop)$/.exec(kind);
    const action = (m ? m[1] : kind).slice('chaos.'.length);
    const target = str(e.target) ?? str(e.name) ?? str(e.fault);
    const label = str(e.label) ?? (target ? `${action} ${target}` : action);
    const key = `${action}\u0000${target ?? ''}`;
    const dur = num(e.durMs) ?? num(e.ms);
    if (m && (m[2] === 'start' || m[2] === 'begin')) {
      if (!open.has(key)) open.set(key, { start: ts, label });
    } else if (m) {
      const o = open.get(key);
      open.delete(key);
      out.push({ start: o?.start ?? ts, end: ts, label: o?.label ?? label });
    } else out.push({ start: ts, end: ts + Math.max(0, dur ?? 0), label });
  }
  for (const o of open.values())
    out.push({ start: o.start, end: Math.max(o.start, runEnd), label: o.label });
  return out.sort((a, b) => a.start - b.start);
}

const WIDTH = 720;
const HEIGHT = 280;
/** Log scales cannot show 0: a latency below this is drawn at it. */
const MIN_MS = 0.001;

const baseConfig = {
  background: 'white',
  font: 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif',
  axis: { labelFontSize: 11, titleFontSize: 12 },
  legend: { labelFontSize: 11, titleFontSize: 12 },
};

export function latencySpec(
  points: readonly LatencyPoint[],
  windows: readonly ChaosWindow[],
  t0: number,
): VegaLite.TopLevelSpec {
  const rel = windows.map((w) => ({
    start: (w.start - t0) / 1000,
    end: (w.end - t0) / 1000,
    label: w.label,
  }));
  const values = points.map((p) => ({ ...p, ms: Math.max(MIN_MS, p.ms) }));
  const x = { field: 't', type: 'quantitative', title: 'time since run start (s)' } as const;
  const y = {
    field: 'ms',
    type: 'quantitative',
    title: 'latency (ms, log scale)',
    scale: { type: 'log' },
  } as const;
  const color = {
    field: 'series',
    type: 'nominal',
    title: null,
    scale: { domain: ['fault', 'invalidation'], range: ['#4c78a8', '#e45756'] },
    legend: { orient: 'top', labelLimit: 400, labelExpr: "datum.label + ' latency'" },
  } as const;
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: {
      text: 'Fault and invalidation latency',
      subtitle: `fault.end durMs, mn.ack waitedMs${rel.length > 0 ? '; shaded: chaos windows' : ''}`,
    },
    width: WIDTH,
    height: HEIGHT,
    config: baseConfig,
    layer: [
      {
        name: 'chaos',
        data: { values: rel },
        mark: { type: 'rect', color: '#f2a33a', opacity: 0.22 },
        encoding: { x: { ...x, field: 'start' }, x2: { field: 'end' } },
      },
      {
        name: 'chaos_label',
        data: { values: rel },
        mark: { type: 'text', align: 'left', baseline: 'top', dx: 3, dy: 3, color: '#a35f00' },
        encoding: { x: { ...x, field: 'start' }, y: { value: 0 }, text: { field: 'label' } },
      },
      {
        name: 'faults',
        data: { values: values.filter((p) => p.series === 'fault') },
        mark: { type: 'point', filled: true, size: 28, opacity: 0.8 },
        encoding: { x, y, color },
      },
      {
        name: 'invalidations',
        data: { values: values.filter((p) => p.series === 'invalidation') },
        mark: { type: 'point', shape: 'diamond', filled: true, size: 40, opacity: 0.8 },
        encoding: { x, y, color },
      },
    ],
  };
}

/** The modes' colors, the same in every report (so patched and legacy compare at a glance). */
const MODE_COLORS: Record<string, string> = { patched: '#4c78a8', legacy: '#e45756' };

/**
 * Histogram of PT-lock hold times on a log axis (four bins a decade), one color per mode,
 * spanning at least three decades; `thresholdMs` (the bounded-ptlock-hold threshold) is
 * drawn as a rule.
 */
export function ptlHoldSpec(
  samples: readonly HoldSample[],
  thresholdMs?: number,
): VegaLite.TopLevelSpec {
  const values = samples.map((s) => ({ ...s, lg: Math.log10(Math.max(MIN_MS, s.heldMs)) }));
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    lo = Math.min(lo, Math.floor(v.lg));
    hi = Math.max(hi, Math.floor(v.lg) + 1);
  }
  const lgThreshold = thresholdMs !== undefined ? Math.log10(thresholdMs) : undefined;
  if (lgThreshold !== undefined) {
    lo = Math.min(lo, Math.floor(lgThreshold));
    hi = Math.max(hi, Math.ceil(lgThreshold));
  }
  if (!Number.isFinite(lo)) [lo, hi] = [-1, 3];
  hi = Math.max(hi, lo + 3);
  const modes = [...new Set(samples.map((s) => s.mode))].sort(
    (a, b) => (MODE_COLORS[a] ? 0 : 1) - (MODE_COLORS[b] ? 0 : 1) || a.localeCompare(b),
  );
  const decades = Array.from({ length: hi - lo + 1 }, (_, i) => lo + i);
  const x = {
    field: 'lg',
    type: 'quantitative' as const,
    title: 'held (ms, log scale)',
    scale: { domain: [lo, hi] },
    axis: { values: decades, labelExpr: "format(pow(10, datum.value), '~g')" },
  };
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: {
      text: 'PT-lock hold time',
      subtitle:
        samples.length > 0
          ? `ptl.release heldMs, ${samples.length} release(s)`
          : 'no PT lock was released in this run',
    },
    width: WIDTH,
    height: HEIGHT,
    config: baseConfig,
    layer: [
      {
        name: 'holds',
        data: { values },
        mark: { type: 'bar', opacity: 0.75, binSpacing: 1 },
        encoding: {
          x: { ...x, bin: { step: 0.25, extent: [lo, hi] } },
          y: {
            aggregate: 'count',
            type: 'quantitative',
            title: 'releases',
            stack: null,
            axis: { tickMinStep: 1, format: 'd' },
          },
          color: {
            field: 'mode',
            type: 'nominal',
            title: 'mode',
            scale: { domain: modes, range: modes.map((m) => MODE_COLORS[m] ?? '#72b7b2') },
            legend: { orient: 'top' },
          },
        },
      },
      {
        name: 'threshold',
        data: {
          values:
            lgThreshold !== undefined
              ? [{ lg: lgThreshold, label: `bounded-ptlock-hold: ${thresholdMs} ms` }]
              : [],
        },
        layer: [
          { mark: { type: 'rule', strokeDash: [4, 3], color: '#9a6700' }, encoding: { x } },
          {
            mark: {
              type: 'text',
              align: 'right',
              baseline: 'top',
              dx: -4,
              dy: 4,
              color: '#9a6700',
            },
            encoding: { x, y: { value: 0 }, text: { field: 'label' } },
          },
        ],
      },
    ],
  };
}

/** One point of the memory plot: t seconds after the run started. */
export interface MemoryPoint {
  t: number;
  value: number;
  series: 'free frames' | 'swapped out' | 'swapped in';
}

/**
 * The memory plot's data: free frames after each reclaim pass (reclaim free), and how many
 * pages were swapped out and swapped in so far (swap.out, swap.in counted), relative to `t0`.
 * Empty when the run reclaimed nothing.
 */
export function memoryPoints(events: readonly TraceEvent[], t0: number): MemoryPoint[] {
  const out: MemoryPoint[] = [];
  let outs = 0;
  let ins = 0;
  for (const e of [...events].sort((a, b) => a.ts - b.ts)) {
    const t = (e.ts - t0) / 1000;
    if (e.kind === 'reclaim') out.push({ t, value: e.free, series: 'free frames' });
    else if (e.kind === 'swap.out') out.push({ t, value: ++outs, series: 'swapped out' });
    else if (e.kind === 'swap.in') out.push({ t, value: ++ins, series: 'swapped in' });
  }
  return out;
}

/**
 * Memory over the run: the free-frame curve (sampled at each reclaim pass) against kswapd's
 * watermarks (rules, when the lab has them), and the pages swapped out and in so far.
 */
export function memorySpec(
  points: readonly MemoryPoint[],
  watermarks?: { low: number; high: number },
): VegaLite.TopLevelSpec {
  const x = { field: 't', type: 'quantitative', title: 'time since run start (s)' } as const;
  const y = { field: 'value', type: 'quantitative', title: 'pages' } as const;
  const rules = watermarks
    ? [
        { value: watermarks.low, label: `low watermark (${watermarks.low}): kswapd wakes` },
        { value: watermarks.high, label: `high watermark (${watermarks.high}): kswapd stops` },
      ]
    : [];
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: {
      text: 'Memory pressure',
      subtitle: 'free frames after each reclaim pass; pages swapped out and in so far',
    },
    width: WIDTH,
    height: HEIGHT,
    config: baseConfig,
    layer: [
      {
        name: 'memory',
        data: { values: [...points] },
        mark: { type: 'line', interpolate: 'step-after', point: true },
        encoding: {
          x,
          y,
          color: {
            field: 'series',
            type: 'nominal',
            title: null,
            scale: {
              domain: ['free frames', 'swapped out', 'swapped in'],
              range: ['#4c78a8', '#e45756', '#54a24b'],
            },
            legend: { orient: 'top' },
          },
        },
      },
      {
        name: 'watermarks',
        data: { values: rules },
        layer: [
          {
            mark: { type: 'rule', strokeDash: [4, 3], color: '#9a6700' },
            encoding: { y: { field: 'value', type: 'quantitative' } },
          },
          {
            mark: { type: 'text', align: 'left', baseline: 'bottom', dx: 3, color: '#9a6700' },
            encoding: {
              x: { value: 0 },
              y: { field: 'value', type: 'quantitative' },
              text: { field: 'label' },
            },
          },
        ],
      },
    ],
  };
}

/**
 * vega and vega-lite are ES modules with a top-level await (in vega-canvas), which require()
 * cannot load, and tsc (module commonjs) compiles `import()` into require(). A Function body
 * is not compiled: its import() is Node's own. Under vitest's module runner that import() has
 * no loader (ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING), and there the compiled-looking
 * `import(specifier)` below is the runner's own dynamic import, which works.
 */
// eslint-disable-next-line @typescript-eslint/no-implied-eval
const nodeImport = new Function('specifier', 'return import(specifier)') as (
  specifier: string,
) => Promise<unknown>;
const hostImport = (specifier: string): Promise<unknown> => import(specifier);

async function importEsm<T>(specifier: string): Promise<T> {
  try {
    return (await nodeImport(specifier)) as T;
  } catch (e) {
    if ((e as { code?: unknown }).code !== 'ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING') throw e;
    return (await hostImport(specifier)) as T;
  }
}

let libs: Promise<{ vega: typeof Vega; vl: typeof VegaLite }> | null = null;
const loadVega = () =>
  (libs ??= Promise.all([importEsm<typeof Vega>('vega'), importEsm<typeof VegaLite>('vega-lite')])
    .then(([vega, vl]) => ({ vega, vl }))
    .catch((e: unknown) => {
      libs = null;
      throw e;
    }));

/**
 * Start loading Vega and Vega-Lite now (half a CPU-second) so that the report's first plot does
 * not wait for them: `mmlab run` calls it while it waits for its local lab to stop. A failure
 * here is the render's to report.
 */
export function preloadPlots(): void {
  loadVega().catch(() => undefined);
}

/** Compile a Vega-Lite spec and render it to an SVG document, headless. */
export async function renderSvg(spec: VegaLite.TopLevelSpec): Promise<string> {
  const { vega, vl } = await loadVega();
  // Warnings (an empty layer has no extent) would go to the console: keep them quiet.
  const compiled = vl.compile(spec, { logger: vega.logger(vega.None) }).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none', logLevel: vega.Error });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
