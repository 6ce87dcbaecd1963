/**
 * `mmlab run FILE [--local] [--out DIR]`: parse the scenario, get a lab, run it, write
 * OUT/results.json and OUT/trace.jsonl, then the run report (OUT/report.html, latency.svg,
 * ptl-hold.svg), print a summary, and return the exit code (0 valid, 1 invalid, 2 unknown or
 * a scenario that does not parse). The report is written last and is best effort: a failure
 * to render it is a warning and changes neither the verdict nor the exit code.
 *
 * A local lab is always torn down before returning: after a normal run, after an error, and
 * on SIGINT/SIGTERM (which abort the run; a second one exits at once).
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { KERNEL_OF_MODE, MmlabError } from '@mmlab/protocol';
import { now } from '@mmlab/runtime';
import { fsckRedis } from '@mmlab/fsck';
import {
  type FsckResult,
  RunResults,
  type Scenario,
  VERDICT_EXIT_CODE,
  parseScenario,
  type RunResults as RunResultsT,
} from '@mmlab/scenario';
import { LabMismatch, type LabConnection, connectLab, startLocalLab } from './lab-connection';
import { chaosResults } from './chaos-results';
import { computeMetrics } from './metrics';
import { preloadPlots } from './report/plots';
import { writeReport } from './report/report';
import { type RunOutcome, ScenarioRunner } from './scenario-runner';
import { formatSummary } from './summary';

export interface RunCommandOptions {
  /** start a lab for this run (LocalLab) instead of using NATS_URL / MMLAB_OBSERVER_URL */
  local?: boolean;
  /** output directory (default results/<name>/) */
  out?: string;
  /** false (--no-report): no report.html and no plots, results.json and trace.jsonl only */
  report?: boolean;
}

export interface Io {
  out: (line: string) => void;
  err: (line: string) => void;
  env: NodeJS.ProcessEnv;
}

export const defaultIo: Io = {
  out: (l) => process.stdout.write(l + '\n'),
  err: (l) => process.stderr.write(l + '\n'),
  env: process.env,
};

export async function runCommand(
  file: string,
  opts: RunCommandOptions,
  io: Io = defaultIo,
): Promise<number> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    io.err(`${file}: ${e instanceof Error ? e.message : String(e)}`);
    return 2;
  }
  const parsed = parseScenario(text, file);
  if (!parsed.ok) {
    for (const e of parsed.errors) io.err(e);
    io.err(`${file}: ${parsed.errors.length} error(s); nothing was run`);
    return 2;
  }
  const scenario = parsed.scenario;
  const outDir = path.resolve(opts.out ?? path.join('results', scenario.name));
  mkdirSync(path.dirname(outDir), { recursive: true });

  const ac = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    if (ac.signal.aborted) process.exit(130);
    io.err(
      `${sig}: stopping the run${opts.local ? ' and the local lab' : ''} (again to exit at once)`,
    );
    ac.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const { results, dir } = await runAndRecord(scenario, opts, outDir, ac.signal, io);
    io.out(formatSummary(results, path.join(dir, 'results.json')));
    if (dir !== outDir)
      io.out(
        `  ${outDir} still holds the last complete run: this one could not complete, so it did not replace it`,
      );
    return VERDICT_EXIT_CODE[results.verdict];
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/** The verdict of the results.json in dir, if there is a readable one. */
function verdictIn(dir: string): RunResultsT['verdict'] | undefined {
  try {
    const r = RunResults.safeParse(
      JSON.parse(readFileSync(path.join(dir, 'results.json'), 'utf8')),
    );
    return r.success ? r.data.verdict : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Where a run's files go: outDir, unless the run could not complete (unknown) and outDir holds
 * a complete run (valid or invalid): a failed run never replaces a good record; its files go
 * to `<outDir>.unknown/` (replacing the previous failed run's) instead.
 */
export function destinationOf(outDir: string, verdict: RunResultsT['verdict']): string {
  const previous = verdictIn(outDir);
  return verdict === 'unknown' && (previous === 'valid' || previous === 'invalid')
    ? `${outDir}.unknown`
    : outDir;
}

/** Write a file whole or not at all (a reader never sees half of it). */
async function writeAtomic(file: string, text: string): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  await writeFile(tmp, text);
  renameSync(tmp, file);
}

/**
 * Run with a lab and write both files; any failure on the way is an `unknown` result. The
 * services' logs are written aside while the run lasts and moved into the run's directory with
 * the rest once its verdict says which directory that is (destinationOf).
 */
async function runAndRecord(
  scenario: Scenario,
  opts: RunCommandOptions,
  outDir: string,
  signal: AbortSignal,
  io: Io,
): Promise<{ results: RunResultsT; dir: string }> {
  const logsAside = opts.local ? mkdtempSync(`${outDir}.logs-`) : undefined;
  const startedAt = new Date();
  const t0 = now();
  const warn = (l: string) => io.err(`warning: ${l}`);
  let lab: LabConnection | null = null;
  let outcome: RunOutcome;
  // what the lab ran with: the scenario's until a running lab says otherwise
  let ranConfig = scenario.config;
  let runStartTs: number | undefined;
  let fsckResult: FsckResult | undefined;
  try {
    if (opts.local) {
      io.err(
        `starting a local lab: ${describeConfig(scenario)} (logs in ${logsAside}, then in the run's directory)`,
      );
      lab = await startLocalLab(scenario.config, logsAside ?? outDir, scenario.seed);
    } else {
      lab = await connectLab(scenario.config, io.env, warn);
    }
    ranConfig = lab.config;
    if (signal.aborted) throw new Error('interrupted');
    io.err(
      `running ${scenario.name} (${scenario.steps.length} steps) on ${lab.instances.length} instances`,
    );
    runStartTs = now();
    outcome = await new ScenarioRunner(scenario, lab, { signal, log: io.err }).run();
    if (outcome.verdict !== 'unknown' && lab.redisUrl)
      fsckResult = await fsckAfterRun(lab.redisUrl, scenario);
  } catch (e) {
    if (e instanceof LabMismatch) ranConfig = e.labConfig;
    const message =
      e instanceof MmlabError ? e.toWire().message : e instanceof Error ? e.message : String(e);
    const error = `lab: ${message}`;
    outcome = { verdict: 'unknown', error, steps: [], rawEvents: [], events: [], invariants: [] };
  } finally {
    // the report's plotting libraries load while the lab's processes stop
    if (opts.report !== false) preloadPlots();
    if (lab) {
      try {
        await lab.close();
      } catch (e) {
        warn(`closing the lab: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
  }

  const dir = destinationOf(outDir, outcome.verdict);
  mkdirSync(dir, { recursive: true });
  if (logsAside) {
    rmSync(path.join(dir, 'logs'), { recursive: true, force: true });
    renameSync(logsAside, path.join(dir, 'logs'));
  } else if (existsSync(path.join(dir, 'logs')) && dir !== outDir) {
    rmSync(path.join(dir, 'logs'), { recursive: true, force: true });
  }
  const tracePath = path.join(dir, 'trace.jsonl');
  const draft: RunResultsT = {
    name: scenario.name,
    seed: scenario.seed ?? null,
    config: ranConfig,
    // fsck findings the scenario does not expect make a valid run invalid; a state that could
    // not be read changes nothing.
    verdict:
      outcome.verdict === 'valid' && unexpectedFsck(fsckResult, scenario).length > 0
        ? 'invalid'
        : outcome.verdict,
    expectedViolations: scenario.expect.violations,
    ...(scenario.expect.fsck.length > 0 && { expectedFsck: scenario.expect.fsck }),
    ...(outcome.error !== undefined && { error: outcome.error }),
    startedAt: startedAt.toISOString(),
    durationMs: now() - t0,
    steps: outcome.steps,
    invariants: outcome.invariants,
    metrics: computeMetrics(outcome.events),
    workloads: outcome.workloads ?? [],
    chaos: chaosResults(outcome, outcome.events),
    ...(fsckResult && { fsck: fsckResult }),
    trace: tracePath,
  };
  // Our own output must match the schema readers use; if it does not, that is a runner bug.
  const checked = RunResults.safeParse(draft);
  const results: RunResultsT = checked.success
    ? checked.data
    : {
        ...draft,
        verdict: 'unknown',
        error: `results.json does not match its schema: ${checked.error.message}`,
      };
  const resultsPath = path.join(dir, 'results.json');
  await writeAtomic(tracePath, outcome.rawEvents.map((e) => JSON.stringify(e) + '\n').join(''));
  await writeAtomic(resultsPath, JSON.stringify(results, null, 2) + '\n');

  // The report comes after the results are safely on disk; results.json then names it.
  if (opts.report === false) return { results, dir };
  try {
    const report = await writeReport(dir, {
      results,
      events: outcome.events,
      rawEvents: outcome.rawEvents,
      runStartTs,
    });
    const withReport: RunResultsT = { ...results, report };
    await writeAtomic(resultsPath, JSON.stringify(withReport, null, 2) + '\n');
    return { results: withReport, dir };
  } catch (e) {
    warn(`the run report was not written: ${e instanceof Error ? e.message : String(e)}`);
    return { results, dir };
  }
}

/**
 * mmlab fsck of the lab's Redis once the run is over: what a replica killed in the run left is
 * finished by the others within about two lease TTLs, so the check reads until clean or three.
 */
/** The findings of fsck the scenario does not name in expect.fsck (none when it did not run). */
export function unexpectedFsck(
  r: FsckResult | undefined,
  scenario: Scenario,
): FsckResult['findings'] {
  if (!r || r.ok || r.error) return [];
  return r.findings.filter((f) => !(scenario.expect.fsck as readonly string[]).includes(f.code));
}

async function fsckAfterRun(redisUrl: string, scenario: Scenario): Promise<FsckResult> {
  try {
    const r = await fsckRedis(redisUrl, { settleMs: 3 * (scenario.config.leaseTtlMs ?? 2000) });
    return { ok: r.ok, findings: r.findings };
  } catch (e) {
    return { ok: false, findings: [], error: e instanceof Error ? e.message : String(e) };
  }
}

const describeConfig = (s: Scenario): string => {
  const c = s.config;
  const subs = c.subscribers ?? [];
  return (
    `kernel ${KERNEL_OF_MODE[c.mode]} (mode ${c.mode}), ${c.frames} frames, ${c.cpus} cpus, ${c.mmReplicas} mm replicas` +
    (subs.length > 0 ? `, subscribers ${subs.map((x) => x.name).join(' ')}` : '') +
    (c.thp === 'always' ? `, thp always (order ${c.hugePageOrder ?? 3})` : '') +
    (c.hugetlbPages ? `, ${c.hugetlbPages} hugetlb pages` : '') +
    (c.dispatch ? `, ${c.dispatch} dispatch` : '') +
    (c.inject?.length ? `, inject ${c.inject.join(',')}` : '')
  );
};
