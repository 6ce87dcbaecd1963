/**
 * Every example scenario, run as a user runs it (`mmlab run FILE --local`): each must come out
 * valid. The fault-injection examples must be valid *because* the checker caught exactly the
 * invariants they break — with the offending events in results.json — and the same scenario
 * without its injection must break none. An injection example that another test file runs
 * unchanged with these checks and its own (CHECKED_ELSEWHERE) is not run a second time here.
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { parseDocument } from 'yaml';
import { afterAll, describe, expect, it } from 'vitest';
import { TraceEvent } from '@mmlab/protocol';
import { RunResults } from '@mmlab/scenario';
import { repoRoot } from '@mmlab/runner';
import { type ScenarioRun, runMmlab } from '@mmlab/testing';
import {
  expectControlClean,
  expectInjectionCaught,
  withoutInjection,
} from './support/inject-checks';

const root = repoRoot();
const tmp = mkdtempSync(path.join(tmpdir(), 'mmlab-examples-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const list = (dir: string) =>
  readdirSync(path.join(root, dir))
    .filter((f) => f.endsWith('.yaml'))
    .map((f) => path.join(dir, f));

async function runFile(file: string, out: string): Promise<ScenarioRun> {
  // no report.html: these runs check results.json and the trace (test/mmlab-run checks the report)
  const r = await runMmlab(['run', file, '--local', '--out', out, '--no-report']);
  const results = RunResults.parse(
    JSON.parse(readFileSync(path.join(out, 'results.json'), 'utf8')),
  );
  const events = readFileSync(path.join(out, 'trace.jsonl'), 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => TraceEvent.parse(JSON.parse(l)));
  return { code: r.code, results, log: r.stdout + r.stderr, events };
}

/**
 * What the control run of an injection must show besides breaking nothing: the check the
 * injection skips, at work on the same race.
 */
const controlShows: Record<string, (r: { results: RunResults; events: TraceEvent[] }) => void> = {
  'examples/inject/skip-fence-check.yaml': ({ results, events }) => {
    // the COW that lost its lease: its late set_pte_at refused, its CPU told ESTALE
    const lost = events.filter((e) => e.kind === 'crash.point' && e.action === 'lose-lease');
    expect(lost).toHaveLength(1);
    const rejects = events.filter((e) => e.kind === 'pte.reject');
    expect(rejects).toMatchObject([{ op: lost[0].op, reason: 'lease lost before set_pte_at' }]);
    expect(results.workloads?.map((w) => w.failed.byCode).filter((c) => c.ESTALE)).toEqual([
      { ESTALE: 1 },
    ]);
  },
};

/**
 * Injection examples another test file runs unchanged — the injected run, its control, or both —
 * with expectInjectionCaught / expectControlClean (test/support/inject-checks.ts) besides checks
 * of its own: the same `mmlab run` here would repeat it.
 */
const CHECKED_ELSEWHERE: Record<string, { in: string; injected: boolean; control: boolean }> = {
  // thp.e2e's thp-single-address test (its control is run here)
  'examples/inject/thp-single-address.yaml': {
    in: 'test/thp.e2e-spec.ts',
    injected: true,
    control: false,
  },
  // kvm.e2e's retry race with mmuLock spin, the example's own lock (generation is kvm.e2e's only)
  'examples/inject/kvm-skip-retry.yaml': {
    in: 'test/kvm.e2e-spec.ts',
    injected: true,
    control: true,
  },
};
const injectedHere = list('examples/inject').filter((f) => !CHECKED_ELSEWHERE[f]?.injected);
const controlHere = list('examples/inject').filter((f) => !CHECKED_ELSEWHERE[f]?.control);

describe('examples/ (examples/chaos/: test/chaos.e2e-spec.ts)', () => {
  it.each(list('examples'))('%s is valid', async (file) => {
    const { code, results, log } = await runFile(
      file,
      path.join(tmp, path.basename(file, '.yaml')),
    );
    expect(results.verdict, log).toBe('valid');
    expect(code).toBe(0);
    expect(results.steps.every((s) => s.ok)).toBe(true);
    expect(results.report, '--no-report writes no report').toBeUndefined();
  });
});

describe('examples/inject/', () => {
  it.each(Object.entries(CHECKED_ELSEWHERE))(
    '%s is run unchanged, with these checks, by the test file named',
    (file, where) => {
      expect(list('examples/inject')).toContain(file);
      const text = readFileSync(path.join(root, where.in), 'utf8');
      expect(text).toContain(`'${file}'`);
      if (where.injected) expect(text).toMatch(/expectInjectionCaught\(/);
      if (where.control) expect(text).toMatch(/expectControlClean\(/);
    },
  );

  it.each(injectedHere)('%s: the checker catches the injected fault', async (file) => {
    const run = await runFile(file, path.join(tmp, path.basename(file, '.yaml')));
    expectInjectionCaught(run, file);
  });

  it.each(controlHere)('%s without its injection breaks nothing', async (file) => {
    const doc = parseDocument(readFileSync(path.join(root, file), 'utf8'));
    withoutInjection(doc);
    doc.setIn(['name'], `${String(doc.get('name'))}-control`);
    const control = path.join(tmp, `${path.basename(file, '.yaml')}-control.yaml`);
    writeFileSync(control, doc.toString());
    const run = await runFile(control, path.join(tmp, path.basename(control, '.yaml')));
    expectControlClean(run);
    controlShows[file]?.(run);
  });
});
