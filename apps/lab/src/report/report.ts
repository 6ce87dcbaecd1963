/**
 * report.html: one self-contained page per run (no scripts, no external URLs; the plots are
 * inline SVG, the styles inline CSS), written beside results.json with the plots as their
 * own files too:
 *
 *   report.html   verdict, invariant verdicts (each violation with its offending events),
 *                 the sequence diagram of the run, latency and PT-lock plots, metrics, steps
 *   latency.svg   fault and invalidation latency over time, chaos windows shaded
 *   ptl-hold.svg  PT-lock hold time distribution per mode
 *   memory.svg    free frames against kswapd's watermarks, swap-outs and swap-ins (only for a
 *                 run that reclaimed)
 *
 * buildReport is pure (tests drive it with a fixture); writeReport renders and writes.
 */
import { writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import type { TraceEvent } from '@mmlab/protocol';
import type { InvariantResult, ReportFiles, RunResults, StepResult } from '@mmlab/scenario';
import { percentile } from '../metrics';
import { DEFAULT_SOFTLOCKUP_MS } from '../scenario-runner';
import { diagramSection } from './diagram';
import { type Html, html, trustedHtml } from './html';
import {
  type ChaosWindow,
  chaosWindows,
  holdSamples,
  latencyPoints,
  latencySpec,
  memoryPoints,
  memorySpec,
  ptlHoldSpec,
  renderSvg,
} from './plots';

export const REPORT_FILES = {
  html: 'report.html',
  latencySvg: 'latency.svg',
  ptlHoldSvg: 'ptl-hold.svg',
  memorySvg: 'memory.svg',
} as const;

/** Offending events shown per violation (the rest are counted). */
export const MAX_VIOLATION_EVENTS = 100;

export interface ReportInput {
  results: RunResults;
  /** the run's events that parse as TraceEvent */
  events: readonly TraceEvent[];
  /** every event as the observer returned it (chaos windows are read from these) */
  rawEvents?: readonly unknown[];
  /** when the run's steps started, ms since the epoch (default: the first event's ts) */
  runStartTs?: number;
  /** windows to shade besides those found in the trace's chaos.* events */
  chaosWindows?: readonly ChaosWindow[];
}

export interface RenderedReport {
  html: string;
  latencySvg: string;
  ptlHoldSvg: string;
  /** only for a run that reclaimed (reclaim, swap.out or swap.in events) */
  memorySvg?: string;
}

/** t0 of the plots and the timeline, and the end of the run in event time. */
function timeBase(input: ReportInput): { t0: number; tEnd: number } {
  let lo = Infinity;
  let hi = -Infinity;
  for (const e of input.events) {
    lo = Math.min(lo, e.ts);
    hi = Math.max(hi, e.ts);
  }
  const t0 = input.runStartTs ?? (Number.isFinite(lo) ? lo : Date.parse(input.results.startedAt));
  return { t0, tEnd: Number.isFinite(hi) ? hi : t0 };
}

/** Render both plots and the page. */
export async function buildReport(input: ReportInput): Promise<RenderedReport> {
  const { t0, tEnd } = timeBase(input);
  const windows = [...(input.chaosWindows ?? []), ...chaosWindows(input.rawEvents ?? [], tEnd)];
  const latencySvg = await renderSvg(latencySpec(latencyPoints(input.events, t0), windows, t0));
  const ptlHoldSvg = await renderSvg(
    ptlHoldSpec(
      holdSamples(input.events, input.results.config.mode),
      input.results.config.softlockupMs ?? DEFAULT_SOFTLOCKUP_MS,
    ),
  );
  const memory = memoryPoints(input.events, t0);
  const memorySvg =
    memory.length > 0
      ? await renderSvg(memorySpec(memory, input.results.config.watermarks))
      : undefined;
  return {
    html: reportHtml(input, { latencySvg, ptlHoldSvg, memorySvg, t0, windows }),
    latencySvg,
    ptlHoldSvg,
    ...(memorySvg !== undefined && { memorySvg }),
  };
}

/**
 * Write report.html, latency.svg and ptl-hold.svg into outDir; returns their paths (as
 * results.json records them).
 */
export async function writeReport(outDir: string, input: ReportInput): Promise<ReportFiles> {
  const r = await buildReport(input);
  const files: ReportFiles = {
    html: path.join(outDir, REPORT_FILES.html),
    latencySvg: path.join(outDir, REPORT_FILES.latencySvg),
    ptlHoldSvg: path.join(outDir, REPORT_FILES.ptlHoldSvg),
  };
  await writeFile(files.latencySvg, r.latencySvg);
  await writeFile(files.ptlHoldSvg, r.ptlHoldSvg);
  if (r.memorySvg !== undefined) {
    files.memorySvg = path.join(outDir, REPORT_FILES.memorySvg);
    await writeFile(files.memorySvg, r.memorySvg);
  }
  await writeFile(files.html, r.html);
  return files;
}

// ---- the page ---------------------------------------------------------------------------

const fmtMs = (v: number | null | undefined): string =>
  v === null || v === undefined ? '—' : v < 10 ? v.toFixed(2) : v.toFixed(1);

const json = (v: unknown): string => JSON.stringify(v, null, 2) ?? 'undefined';

/** A value in one line, cut at `max` characters. */
const brief = (v: unknown, max = 160): string => {
  const s = JSON.stringify(v) ?? '';
  return s.length > max ? s.slice(0, max) + '…' : s;
};

/** The steps of a result tree in order, each with its depth (branches under their parallel). */
function flattenSteps(steps: readonly StepResult[], depth = 0): { s: StepResult; depth: number }[] {
  return steps.flatMap((s) => [
    { s, depth },
    ...(s.branches ?? []).flatMap((b) => flattenSteps(b, depth + 1)),
  ]);
}

function invariantRows(invs: readonly InvariantResult[]): Html {
  return html`${invs.map(
    (i) =>
      html`<tr class="${i.ok ? 'ok' : 'bad'}">
        <td class="mono">${i.name}</td>
        <td class="verdict-cell">${i.ok ? 'ok' : 'VIOLATED'}</td>
        <td class="num">${i.checked}</td>
        <td>
          ${
            i.violations.length === 0
              ? html`<span class="muted">none</span>`
              : i.violations.map((v) => {
                  const shown = v.events.slice(0, MAX_VIOLATION_EVENTS);
                  return html`<details class="violation">
                    <summary>
                      ${v.message} <span class="muted">(${v.events.length} event(s))</span>
                    </summary>
                    <pre>${json(shown)}</pre>
                    ${
                      v.events.length > shown.length &&
                      html`<p class="muted">
                        ${v.events.length - shown.length} more in results.json
                      </p>`
                    }
                  </details>`;
                })
          }
        </td>
      </tr>`,
  )}`;
}

function stepRows(steps: readonly StepResult[]): Html {
  return html`${flattenSteps(steps).map(
    ({ s, depth }) =>
      html`<tr class="${s.ok ? 'ok' : 'bad'}">
        <td class="mono" style="padding-left: ${0.5 + depth * 1.5}em">${s.path ?? s.index}</td>
        <td class="num">${s.line}</td>
        <td class="mono">${s.op}</td>
        <td class="verdict-cell">${s.ok ? 'ok' : 'NOT OK'}</td>
        <td class="mono">
          ${s.error ? html`<b>${s.error.code}</b> ${s.error.message}` : ''}
          ${s.value !== undefined && brief(s.value)}
        </td>
        <td>${s.reason ?? ''}</td>
        <td class="num">${fmtMs(s.durationMs)}</td>
      </tr>`,
  )}`;
}

/** The run under faults: windows, operations, latency in and out of faults, workloads, locks left. */
function chaosSection(r: RunResults): Html {
  const c = r.chaos;
  const workloads = r.workloads ?? [];
  if (!c || (c.faults.length === 0 && workloads.length === 0)) return html``;
  const lat = (name: string, l: NonNullable<RunResults['chaos']>['latency']['inFaults']) =>
    html`<tr>
      <th>${name}</th>
      <td class="num">${l.count}</td>
      <td class="num">${fmtMs(l.p50Ms)}</td>
      <td class="num">${fmtMs(l.p99Ms)}</td>
      <td class="num">${fmtMs(l.maxMs)}</td>
    </tr>`;
  return html`<section id="chaos">
    <h2>Faults and workloads</h2>
    <table>
      <thead>
        <tr>
          <th>#</th>
          <th>fault</th>
          <th>from ms</th>
          <th>to ms</th>
          <th></th>
        </tr>
      </thead>
      <tbody>
        ${c.faults.map(
          (f) =>
            html`<tr>
              <td class="num">${f.id}</td>
              <td class="mono">${f.label}</td>
              <td class="num">${f.startMs.toFixed(0)}</td>
              <td class="num">${f.endMs === null ? 'never healed' : f.endMs.toFixed(0)}</td>
              <td>${f.healError ?? ''}</td>
            </tr>`,
        )}
      </tbody>
    </table>
    <p>
      Operations: ${c.operations.ok} ok, ${c.operations.failedDefinite} failed definitely,
      ${c.operations.failedIndefinite} failed indefinitely
      ${Object.keys(c.operations.byCode).length ? html`(<span class="mono">${json(c.operations.byCode)}</span>)` : ''}.
      Longest PT-lock hold:
      ${c.longestPtlHold ? html`<b>${fmtMs(c.longestPtlHold.ms)} ms</b> (${c.longestPtlHold.lock} of pid ${c.longestPtlHold.pid}, ${c.longestPtlHold.owner})` : '—'}.
      Locks left held after the run:
      ${c.locksLeft.length === 0 ? 'none' : html`<b>${c.locksLeft.map((l) => `${l.lock} of pid ${l.pid} by ${l.owner}`).join(', ')}</b>`}.
    </p>
    <table>
      <thead>
        <tr>
          <th>fault latency</th>
          <th>count</th>
          <th>p50 ms</th>
          <th>p99 ms</th>
          <th>max ms</th>
        </tr>
      </thead>
      <tbody>
        ${lat('during faults', c.latency.inFaults)}
        ${lat('outside faults', c.latency.outsideFaults)}
      </tbody>
    </table>
    ${
      workloads.length === 0
        ? ''
        : html`<table>
            <thead>
              <tr>
                <th>workload</th>
                <th>ops</th>
                <th>faults/s</th>
                <th>ops/s</th>
                <th>failed (definite / indefinite)</th>
                <th>impossible reads</th>
                <th>p50 ms</th>
                <th>p99 ms</th>
              </tr>
            </thead>
            <tbody>
              ${workloads.map(
                (w) =>
                  html`<tr class="${w.impossibleReads ? 'bad' : 'ok'}">
                    <td class="mono">${w.name}</td>
                    <td class="num">${w.window.ops}</td>
                    <td class="num">${w.faultsPerSec}</td>
                    <td class="num">${w.opsPerSec}</td>
                    <td class="num">${w.failed.definite} / ${w.failed.indefinite}</td>
                    <td class="num">${w.impossibleReads}</td>
                    <td class="num">${fmtMs(w.latencyMs.p50)}</td>
                    <td class="num">${fmtMs(w.latencyMs.p99)}</td>
                  </tr>`,
              )}
            </tbody>
          </table>`
    }
  </section>`;
}

/** Invalidation latency (mn.ack waitedMs) per subscriber and callback. */
function invalidationRows(events: readonly TraceEvent[]): Html {
  const groups = new Map<string, number[]>();
  for (const e of events)
    if (e.kind === 'mn.ack') {
      const k = `${e.subscriber}\u0000${e.callback}`;
      const g = groups.get(k) ?? [];
      g.push(e.waitedMs);
      groups.set(k, g);
    }
  if (groups.size === 0)
    return html`<tr>
      <td colspan="6" class="muted">no notifier callbacks in this run</td>
    </tr>`;
  return html`${[...groups]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, xs]) => {
      const [sub, cb] = k.split('\u0000');
      const s = xs.sort((a, b) => a - b);
      return html`<tr>
        <td class="mono">${sub}</td>
        <td class="mono">${cb}</td>
        <td class="num">${s.length}</td>
        <td class="num">${fmtMs(percentile(s, 50))}</td>
        <td class="num">${fmtMs(percentile(s, 99))}</td>
        <td class="num">${fmtMs(percentile(s, 100))}</td>
      </tr>`;
    })}`;
}

interface Parts {
  latencySvg: string;
  ptlHoldSvg: string;
  memorySvg?: string;
  t0: number;
  windows: readonly ChaosWindow[];
}

/**
 * Memory pressure: the plot, and what reclaim did — passes by who ran them, pages freed, kept
 * because referenced or pinned, swapped out and read back (from the swap cache or the slot).
 */
function memorySection(events: readonly TraceEvent[], svg: string): Html {
  const by = new Map<
    string,
    { passes: number; scanned: number; reclaimed: number; referenced: number; pinned: number }
  >();
  for (const e of events) {
    if (e.kind !== 'reclaim') continue;
    const r = by.get(e.why) ?? { passes: 0, scanned: 0, reclaimed: 0, referenced: 0, pinned: 0 };
    r.passes++;
    r.scanned += e.scanned;
    r.reclaimed += e.reclaimed;
    r.referenced += e.referenced;
    r.pinned += e.pinned;
    by.set(e.why, r);
  }
  const outs = events.filter((e) => e.kind === 'swap.out').length;
  const ins = events.filter((e) => e.kind === 'swap.in');
  const cached = ins.filter((e) => e.kind === 'swap.in' && e.cached).length;
  return html`<section id="memory">
    <h2>Memory pressure</h2>
    <figure class="plot">${trustedHtml(svg)}</figure>
    <table>
      <thead>
        <tr>
          <th>reclaim by</th>
          <th>passes</th>
          <th>scanned</th>
          <th>reclaimed</th>
          <th>referenced (kept)</th>
          <th>pinned (kept in swap cache)</th>
        </tr>
      </thead>
      <tbody>
        ${[...by].map(
          ([why, r]) =>
            html`<tr>
              <td>${why}</td>
              <td>${r.passes}</td>
              <td>${r.scanned}</td>
              <td>${r.reclaimed}</td>
              <td>${r.referenced}</td>
              <td>${r.pinned}</td>
            </tr>`,
        )}
      </tbody>
    </table>
    <p>${outs} page(s) swapped out, ${ins.length} swapped in (${cached} from the swap cache).</p>
  </section>`;
}

/**
 * KSM and change_pte: what ksmd passes did (pages made KSM pages, merged, refused and why) and
 * the change_pte KVM got — how many found no sPTE, because invalidate_range_start (v3.7)
 * had zapped it already. Shown when the run has either.
 */
function ksmSection(events: readonly TraceEvent[], m: RunResults['metrics']): Html | false {
  const merges = events.filter((e) => e.kind === 'ksm.merge');
  if (merges.length === 0 && !m.changePte) return false;
  const count = (r: string) => merges.filter((e) => e.result === r).length;
  const reasons = new Map<string, number>();
  for (const e of merges)
    if (e.result === 'refused')
      reasons.set(e.reason ?? '?', (reasons.get(e.reason ?? '?') ?? 0) + 1);
  return html`<section id="ksm">
    <h2>KSM and change_pte</h2>
    <p>
      ksmd: ${count('stable')} KSM page(s) made, ${count('merged')} page(s) merged into one,
      ${count('refused')}
      refused${
        reasons.size > 0 ? ` (${[...reasons].map(([r, n]) => `${r}: ${n}`).join(', ')})` : ''
      }.
    </p>
    <p>
      change_pte reaching KVM: ${m.changePte?.count ?? 0}, of which ${m.changePte?.noSpte ?? 0}
      found no sPTE (invalidate_range_start had zapped it).
    </p>
  </section>`;
}

export function reportHtml(input: ReportInput, p: Parts): string {
  const r = input.results;
  const m = r.metrics;
  const stepsOk = r.steps.filter((s) => s.ok).length;
  const violated = r.invariants.filter((i) => !i.ok).length;
  const diagram = diagramSection(input.events, p.t0, r.invariants);
  const byKind = Object.entries(m.events.byKind).sort(([a], [b]) => a.localeCompare(b));
  const page = html`<!doctype html>
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <title>${r.name}: ${r.verdict} — mmlab run report</title>
        <style>
          ${trustedHtml(STYLE)}
        </style>
      </head>
      <body>
        <header>
          <h1>
            ${r.name} <span class="badge verdict-${r.verdict}">${r.verdict.toUpperCase()}</span>
          </h1>
          <p>
            ${stepsOk}/${r.steps.length} steps ok, ${violated} of ${r.invariants.length} invariants
            violated, ${(r.durationMs / 1000).toFixed(1)} s · mode <b>${r.config.mode}</b> · seed
            ${r.seed ?? 'none'} · started ${r.startedAt}
          </p>
          ${r.error && html`<p class="error">run did not complete: ${r.error}</p>`}
          <nav>
            <a href="#invariants">invariants</a> · <a href="#diagram">sequence</a> ·
            <a href="#latency">latency</a> · <a href="#ptl-hold">PT-lock hold</a> ·
            ${p.memorySvg !== undefined && html`<a href="#memory">memory</a> ·`}
            <a href="#metrics">metrics</a> · <a href="#steps">steps</a> ·
            <a href="#config">config</a>
          </nav>
        </header>
        <main>
          <section id="invariants">
            <h2>Invariants</h2>
            <table class="invariants">
              <thead>
                <tr>
                  <th>invariant</th>
                  <th>verdict</th>
                  <th>checked</th>
                  <th>violations</th>
                </tr>
              </thead>
              <tbody>
                ${invariantRows(r.invariants)}
              </tbody>
            </table>
            ${r.invariants.length === 0 && html`<p class="muted">no invariant was checked</p>`}
          </section>
          <section id="diagram" class="diagram-${diagram.source}">
            <h2>Sequence</h2>
            ${diagram.body}
          </section>
          <section id="latency">
            <h2>Latency</h2>
            <figure class="plot">${trustedHtml(p.latencySvg)}</figure>
            ${
              p.windows.length > 0 &&
              html`<p class="muted">
                Chaos windows:
                ${p.windows.map(
                  (w, i) =>
                    html`${i > 0 && '; '}${w.label}
                    ${((w.start - p.t0) / 1000).toFixed(2)}–${((w.end - p.t0) / 1000).toFixed(2)} s`,
                )}
              </p>`
            }
            <h3>Invalidation latency by subscriber</h3>
            <table>
              <thead>
                <tr>
                  <th>subscriber</th>
                  <th>callback</th>
                  <th>acks</th>
                  <th>p50 ms</th>
                  <th>p99 ms</th>
                  <th>max ms</th>
                </tr>
              </thead>
              <tbody>
                ${invalidationRows(input.events)}
              </tbody>
            </table>
          </section>
          <section id="ptl-hold">
            <h2>PT-lock hold time</h2>
            <figure class="plot">${trustedHtml(p.ptlHoldSvg)}</figure>
          </section>
          ${p.memorySvg !== undefined && memorySection(input.events, p.memorySvg)}
          ${ksmSection(input.events, m)} ${chaosSection(r)}
          <section id="metrics">
            <h2>Metrics</h2>
            <table>
              <thead>
                <tr>
                  <th></th>
                  <th>count</th>
                  <th>p50 ms</th>
                  <th>p90 ms</th>
                  <th>p99 ms</th>
                  <th>max ms</th>
                </tr>
              </thead>
              <tbody>
                <tr>
                  <th>fault latency</th>
                  <td class="num">${m.faults.count}</td>
                  <td class="num">${fmtMs(m.faults.p50Ms)}</td>
                  <td class="num">${fmtMs(m.faults.p90Ms)}</td>
                  <td class="num">${fmtMs(m.faults.p99Ms)}</td>
                  <td class="num">${fmtMs(m.faults.maxMs)}</td>
                </tr>
                <tr>
                  <th>PT-lock hold</th>
                  <td class="num">${m.ptlHold.count}</td>
                  <td class="num">${fmtMs(m.ptlHold.p50Ms)}</td>
                  <td class="num">—</td>
                  <td class="num">${fmtMs(m.ptlHold.p99Ms)}</td>
                  <td class="num">${fmtMs(m.ptlHold.maxMs)}</td>
                </tr>
              </tbody>
            </table>
            <h3>Events by kind (${m.events.total})</h3>
            <table class="kinds">
              <tbody>
                ${byKind.map(
                  ([k, n]) =>
                    html`<tr>
                      <td class="mono">${k}</td>
                      <td class="num">${n}</td>
                    </tr>`,
                )}
              </tbody>
            </table>
          </section>
          <section id="steps">
            <h2>Steps</h2>
            <table class="steps">
              <thead>
                <tr>
                  <th>step</th>
                  <th>line</th>
                  <th>op</th>
                  <th>ok</th>
                  <th>result</th>
                  <th>reason</th>
                  <th>ms</th>
                </tr>
              </thead>
              <tbody>
                ${stepRows(r.steps)}
              </tbody>
            </table>
          </section>
          <section id="config">
            <h2>Configuration</h2>
            <pre>${json(r.config)}</pre>
            <p class="muted">Trace: ${r.trace}</p>
          </section>
        </main>
        <footer>mmlab run report · generated ${new Date().toISOString()}</footer>
      </body>
    </html> `;
  return page.value;
}

const STYLE = `
:root { --ok: #1a7f37; --bad: #cf222e; --unknown: #9a6700; --muted: #656d76; --line: #d0d7de; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1f2328; }
header, main, footer { max-width: 1100px; margin: 0 auto; padding: 0 1.25rem; }
header { padding-top: 1.25rem; border-bottom: 1px solid var(--line); }
h1 { font-size: 1.6rem; margin: 0 0 .3rem; }
h2 { font-size: 1.2rem; margin: 1.8rem 0 .6rem; border-bottom: 1px solid var(--line); padding-bottom: .2rem; }
h3 { font-size: 1rem; margin: 1.2rem 0 .4rem; }
nav { margin: .4rem 0 .8rem; }
nav a { color: #0969da; text-decoration: none; }
.badge { font-size: .9rem; padding: .15rem .55rem; border-radius: 1rem; color: white; vertical-align: middle; }
.verdict-valid { background: var(--ok); }
.verdict-invalid { background: var(--bad); }
.verdict-unknown { background: var(--unknown); }
.error { color: var(--bad); font-weight: 600; }
table { border-collapse: collapse; width: 100%; margin: .3rem 0; }
th, td { border-bottom: 1px solid var(--line); padding: .3rem .5rem; text-align: left; vertical-align: top; }
thead th { background: #f6f8fa; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.mono, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
tr.ok .verdict-cell { color: var(--ok); font-weight: 600; }
tr.bad .verdict-cell { color: var(--bad); font-weight: 700; }
tr.bad { background: #fff5f5; }
.muted, .note { color: var(--muted); }
pre { background: #f6f8fa; border: 1px solid var(--line); border-radius: 6px; padding: .6rem; overflow: auto; max-height: 28rem; }
details.violation { margin: .2rem 0; }
details summary { cursor: pointer; }
figure.plot { margin: .5rem 0; overflow-x: auto; }
figure.plot svg { max-width: 100%; height: auto; }
table.kinds { width: auto; }
table.timeline td { padding: .1rem .4rem; font-size: 12px; }
table.timeline tr.svc-mm td:nth-child(2) { color: #0550ae; }
table.timeline tr.svc-cpu td:nth-child(2) { color: #1a7f37; }
table.timeline tr.svc-hca td:nth-child(2) { color: #8250df; }
table.timeline tr.svc-kvm td:nth-child(2) { color: #bc4c00; }
div.diagram { overflow: auto; max-height: 80vh; border: 1px solid var(--line); border-radius: 6px; }
footer { color: var(--muted); font-size: 12px; padding: 2rem 1.25rem; }
`;
