/** Run the built `mmlab` CLI (dist/apps/lab, bundled) as a child process, as a user would. */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { type Document, parseDocument } from 'yaml';
import { TraceEvent } from '@mmlab/protocol';
import { RunResults } from '@mmlab/scenario';
import { repoRoot, serviceCommand } from '@mmlab/runner';

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** env: the CLI's whole environment (default: this process's). */
export function runMmlab(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<CliRun> {
  const root = repoRoot();
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [...serviceCommand('lab'), ...args], {
      cwd: root,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** What `mmlab run --local` left of a scenario: its exit code, results.json, trace and output. */
export interface ScenarioRun {
  code: number | null;
  results: RunResults;
  events: TraceEvent[];
  log: string;
}

/**
 * Run a scenario file as a user runs it (`mmlab run FILE --local --out DIR/NAME`), its YAML
 * first changed by edit (config, expect…) and renamed NAME, and read what the run wrote.
 */
export async function runScenario(
  file: string,
  name: string,
  dir: string,
  edit: (doc: Document) => void = () => undefined,
  /** write report.html and its plots (mmlab run's default); tests that do not read them skip them */
  opts: { report?: boolean } = {},
): Promise<ScenarioRun> {
  const doc = parseDocument(readFileSync(path.resolve(repoRoot(), file), 'utf8'));
  edit(doc);
  doc.setIn(['name'], name);
  const yaml = path.join(dir, `${name}.yaml`);
  writeFileSync(yaml, doc.toString());
  const out = path.join(dir, name);
  const r = await runMmlab([
    'run',
    yaml,
    '--local',
    '--out',
    out,
    ...(opts.report ? [] : ['--no-report']),
  ]);
  const results = RunResults.parse(
    JSON.parse(readFileSync(path.join(out, 'results.json'), 'utf8')),
  );
  const events = readFileSync(path.join(out, 'trace.jsonl'), 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => TraceEvent.parse(JSON.parse(l)));
  return { code: r.code, results, events, log: r.stdout + r.stderr };
}

/**
 * The legacy twin of an example valid in patched: the same file in kernel v3.6 (mode legacy), where the
 * callback the example's slow subscriber sleeps in was sent under the PT lock — the run is
 * expected to break exactly no-sleep-under-ptlock.
 */
export const runLegacyTwin = (file: string, name: string, dir: string): Promise<ScenarioRun> =>
  runScenario(file, name, dir, (doc) => {
    doc.deleteIn(['config', 'mode']);
    doc.setIn(['config', 'kernel'], 'v3.6');
    doc.setIn(['expect', 'violations'], ['no-sleep-under-ptlock']);
  });

/** What a run came to, in one value a test compares: verdict, exit code, steps, broken invariants. */
export const outcomeOf = (r: ScenarioRun) => ({
  verdict: r.results.verdict,
  code: r.code,
  stepsOk: r.results.steps.every((s) => s.ok),
  broken: r.results.invariants.filter((i) => !i.ok).map((i) => i.name),
});

/** The outcome of a legacy twin that came out as expected. */
export const LEGACY_TWIN_OK = {
  verdict: 'valid',
  code: 0,
  stepsOk: true,
  broken: ['no-sleep-under-ptlock'],
} as const;
