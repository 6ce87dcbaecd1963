/**
 * A benchmark's plot: a Vega-Lite spec rendered to SVG in Node (a headless vega View, renderer
 * 'none'), the way apps/lab/src/report/plots.ts renders the run report's plots (copied, not
 * imported: bench is not an app and apps are not imported).
 */
import type * as Vega from 'vega';
import type * as VegaLite from 'vega-lite/build/index';

export type PlotSpec = VegaLite.TopLevelSpec;

/**
 * vega and vega-lite are ES modules with a top-level await, which require() cannot load, and
 * tsc (module commonjs) compiles `import()` into require(): a Function body is not compiled,
 * so its import() is Node's own. Under vitest's module runner that import() has no loader
 * (ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING); there the plain import() is the runner's own.
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

/** Compile a Vega-Lite spec and render it to an SVG document, headless. */
export async function renderSvg(spec: PlotSpec): Promise<string> {
  const { vega, vl } = await loadVega();
  const compiled = vl.compile(spec, { logger: vega.logger(vega.None) }).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none', logLevel: vega.Error });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

type Row = Record<string, unknown>;

/** A line per series: x against y, colour by series (log scales where asked). */
export function linePlot(o: {
  title: string;
  rows: Row[];
  x: string;
  y: string;
  series?: string;
  xTitle?: string;
  yTitle?: string;
  logX?: boolean;
  logY?: boolean;
  rule?: { y: number; label: string };
}): PlotSpec {
  const line = {
    mark: { type: 'line' as const, point: true },
    encoding: {
      x: {
        field: o.x,
        type: 'quantitative' as const,
        title: o.xTitle ?? o.x,
        ...(o.logX ? { scale: { type: 'log' as const } } : {}),
      },
      y: {
        field: o.y,
        type: 'quantitative' as const,
        title: o.yTitle ?? o.y,
        ...(o.logY ? { scale: { type: 'symlog' as const } } : {}),
      },
      ...(o.series ? { color: { field: o.series, type: 'nominal' as const } } : {}),
    },
  };
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: o.title,
    width: 420,
    height: 240,
    data: { values: o.rows },
    layer: o.rule
      ? [
          line,
          {
            data: { values: [{ y: o.rule.y, label: o.rule.label }] },
            mark: { type: 'rule', strokeDash: [4, 4], color: '#cf222e' },
            encoding: { y: { field: 'y', type: 'quantitative' } },
          },
        ]
      : [line],
  };
}

/** Grouped bars: one bar per (x, series). */
export function barPlot(o: {
  title: string;
  rows: Row[];
  x: string;
  y: string;
  series?: string;
  yTitle?: string;
  logY?: boolean;
}): PlotSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: o.title,
    width: 420,
    height: 240,
    data: { values: o.rows },
    mark: 'bar',
    encoding: {
      x: { field: o.x, type: 'nominal', title: o.x },
      y: {
        field: o.y,
        type: 'quantitative',
        title: o.yTitle ?? o.y,
        ...(o.logY ? { scale: { type: 'symlog' } } : {}),
      },
      ...(o.series
        ? { color: { field: o.series, type: 'nominal' }, xOffset: { field: o.series } }
        : {}),
    },
  };
}
