/**
 * The benchmark harness behind `npm run bench`: what a benchmark returns, the helpers they
 * share (percentiles, timed loops, counters of NATS messages and Redis calls), and the output:
 * bench/results/NAME.json, NAME.svg and the table of figure against target.
 *
 * Every timing a benchmark reports as its figure is a ratio against a baseline measured in the
 * same run (or an A/B/A/B comparison in one run), so the figure means the same on a loaded
 * machine; absolute numbers are kept in the rows beside it.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { NatsConnection, Subscription } from 'nats';
import type { Redis, Cluster } from 'ioredis';
import { TRACE_WILDCARD } from '@mmlab/protocol';
import type { TestLab } from '@mmlab/testing';
import type { LabNeed, SharedLabs } from './labs';
import { type PlotSpec, renderSvg } from './plot';

export type Cell = string | number | boolean | null;
export type Row = Record<string, Cell>;

export interface BenchOptions {
  /** the seconds-long variant the test suite runs (same rows, fewer samples, smaller sizes) */
  quick: boolean;
  /** progress lines (default: none) */
  log?: (line: string) => void;
  /** the labs the quick variants share (quick only: a full variant always starts its own) */
  labs?: SharedLabs;
}

export interface BenchResult {
  name: string;
  /** what it measures (the wording) */
  measures: string;
  quick: boolean;
  /** the headline figure, compared with the target */
  figure: { value: number; unit: string; text: string };
  /** met: null when the run could not decide (e.g. a row it needs is missing) */
  target: { text: string; met: boolean | null };
  /** every measured point (one per configuration) */
  rows: Row[];
  /** per-operation costs: Redis calls and NATS messages per operation, where the path is the point */
  counts?: Record<string, number>;
  notes?: string[];
  plot: PlotSpec;
  machine?: { cpus: number; loadavgBefore: number[]; loadavgAfter: number[] };
  durationS?: number;
}

export interface Benchmark {
  name: string;
  measures: string;
  target: string;
  run(opts: BenchOptions): Promise<BenchResult>;
}

export const pct = (xs: readonly number[], p: number): number => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

/** n sequential calls of fn; the duration of each in ms. */
export async function timed(n: number, fn: (i: number) => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await fn(i);
    out.push(performance.now() - t);
  }
  return out;
}

/** Round for the JSON and the table: 3 significant decimals at most. */
export const round = (v: number, digits = 3): number =>
  Number.isFinite(v) ? Math.round(v * 10 ** digits) / 10 ** digits : v;

/**
 * Counts every NATS message the server delivers while it runs (a `>` subscription on its own
 * connection: requests, replies on _INBOX, trace events), by kind. Messages per operation =
 * count / operations, measured in a phase of its own (the counting costs a delivery each).
 */
export class NatsCounter {
  private sub: Subscription | null = null;
  readonly byKind = { trace: 0, reply: 0, request: 0 };
  constructor(private readonly nc: NatsConnection) {}

  async start(): Promise<void> {
    const tracePrefix = TRACE_WILDCARD.slice(0, -1);
    this.sub = this.nc.subscribe('>', {
      callback: (_e, m) => {
        if (m.subject.startsWith(tracePrefix)) this.byKind.trace++;
        else if (m.subject.startsWith('_INBOX.')) this.byKind.reply++;
        else this.byKind.request++;
      },
    });
    await this.nc.flush();
  }

  /** Stop counting once everything sent so far has been delivered (a flush round trip). */
  async stop(): Promise<{ trace: number; reply: number; request: number; total: number }> {
    await this.nc.flush();
    this.sub?.unsubscribe();
    const { trace, reply, request } = this.byKind;
    return { trace, reply, request, total: trace + reply + request };
  }
}

/**
 * Redis commands executed by the server (INFO commandstats), all clients together: the lab's
 * services, the bench's own Store. Script calls are EVALSHA / EVAL / FCALL.
 */
export async function redisCommandStats(
  redis: Redis | Cluster,
): Promise<{ calls: number; scripts: number }> {
  const info = await redis.info('commandstats');
  let calls = 0;
  let scripts = 0;
  for (const m of info.matchAll(/^cmdstat_([a-z|_-]+):calls=(\d+)/gm)) {
    if (m[1] === 'info') continue;
    calls += Number(m[2]);
    if (/^(evalsha|eval|fcall|evalsha_ro|eval_ro|fcall_ro)$/.test(m[1])) scripts += Number(m[2]);
  }
  return { calls, scripts };
}

/**
 * The lab a benchmark runs fn on: a quick variant given opts.labs runs on the shared lab that
 * fits need (left running for the next benchmark); otherwise own() starts the benchmark's own
 * lab, stopped after fn (its teardown runs mmlab fsck, and a finding fails the benchmark). When
 * fn fails, its error is the one thrown: a failed stop after it is only logged.
 */
export async function withLab<T>(
  opts: BenchOptions,
  need: LabNeed,
  own: () => Promise<TestLab>,
  fn: (env: TestLab) => Promise<T>,
): Promise<T> {
  if (opts.quick && opts.labs) return opts.labs.use(need, fn);
  const env = await own();
  let result: T;
  try {
    result = await fn(env);
  } catch (e) {
    await env.stop().catch((s: unknown) => opts.log?.(`stop after the failure: ${String(s)}`));
    throw e;
  }
  await env.stop();
  return result;
}

/** Resolve after ms. */
export const sleepMs = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Run a benchmark with the machine's load recorded around it. */
export async function runBenchmark(b: Benchmark, opts: BenchOptions): Promise<BenchResult> {
  const loadavgBefore = loadavg();
  const t0 = performance.now();
  const r = await b.run(opts);
  return {
    ...r,
    machine: { cpus: cpus().length, loadavgBefore, loadavgAfter: loadavg() },
    durationS: round((performance.now() - t0) / 1000, 1),
  };
}

/** Write NAME.json and NAME.svg into dir; returns their paths. */
export async function writeResult(
  r: BenchResult,
  dir: string,
): Promise<{ json: string; svg: string }> {
  mkdirSync(dir, { recursive: true });
  const json = path.join(dir, `${r.name}.json`);
  const svg = path.join(dir, `${r.name}.svg`);
  writeFileSync(
    json,
    JSON.stringify(r, (_k, v: unknown) => (typeof v === 'number' ? round(v) : v), 2) + '\n',
  );
  writeFileSync(svg, await renderSvg(r.plot));
  return { json, svg };
}

const met = (m: boolean | null): string => (m === null ? '?' : m ? 'yes' : 'no');

/** The summary: name, figure, target, met? (a Markdown table, so the README can show it). */
export function formatTable(results: readonly BenchResult[]): string {
  const rows = results.map((r) => [
    `\`${r.name}\``,
    r.figure.text,
    r.target.text,
    met(r.target.met),
  ]);
  const head = ['name', 'figure', 'target', 'met?'];
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(w[i])).join(' | ')} |`;
  return [line(head), line(w.map((n) => '-'.repeat(n))), ...rows.map(line)].join('\n');
}

/** Counts of a result, one line (for the table's footnotes). */
export function formatCounts(r: BenchResult): string | null {
  if (!r.counts) return null;
  const c = Object.entries(r.counts)
    .map(([k, v]) => `${k} ${round(v, 2)}`)
    .join(', ');
  return `${r.name}: ${c}`;
}
