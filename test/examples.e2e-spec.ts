/**
 * Every example scenario, run as a user runs it (`mmlab run FILE --local`): each must come out
 * valid. The fault-injection examples must be valid *because* the checker caught exactly the
 * invariants they break — with the offending events in results.json — and the same scenario
 * without its injection must break none.
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { parseDocument } from 'yaml';
import { afterAll, describe, expect, it } from 'vitest';
import { TraceEvent } from '@mmlab/protocol';
import { RunResults, parseScenario } from '@mmlab/scenario';
import { repoRoot } from '@mmlab/runner';
import { runMmlab } from '@mmlab/testing';

const root = repoRoot();
const tmp = mkdtempSync(path.join(tmpdir(), 'mmlab-examples-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const list = (dir: string) =>
  readdirSync(path.join(root, dir))
    .filter((f) => f.endsWith('.yaml'))
    .map((f) => path.join(dir, f));

async function run(
  file: string,
  out: string,
): Promise<{ code: number | null; results: RunResults; log: string; events: TraceEvent[] }> {
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

describe('examples/ (examples/chaos/: test/chaos.e2e-spec.ts)', () => {
  it.each(list('examples'))('%s is valid', async (file) => {
    const { code, results, log } = await run(file, path.join(tmp, path.basename(file, '.yaml')));
    expect(results.verdict, log).toBe('valid');
    expect(code).toBe(0);
    expect(results.steps.every((s) => s.ok)).toBe(true);
    expect(results.report, '--no-report writes no report').toBeUndefined();
  });
});

describe('examples/inject/', () => {
  it.each(list('examples/inject'))('%s: the checker catches the injected fault', async (file) => {
    const { code, results, log } = await run(file, path.join(tmp, path.basename(file, '.yaml')));
    expect(results.verdict, log).toBe('valid');
    expect(code).toBe(0);
    const parsed = parseScenario(readFileSync(path.join(root, file), 'utf8'), file);
    if (!parsed.ok) throw new Error(parsed.errors.join('\n'));
    const expected = parsed.scenario.expect.violations;
    expect(expected.length).toBeGreaterThan(0);
    for (const name of expected) {
      const v = results.invariants.find((i) => i.name === name)!;
      expect(v.ok, name).toBe(false);
      expect(v.violations[0].events.length, `${name} names its offending events`).toBeGreaterThan(
        0,
      );
    }
  });

  it.each(list('examples/inject'))('%s without its injection breaks nothing', async (file) => {
    const doc = parseDocument(readFileSync(path.join(root, file), 'utf8'));
    doc.deleteIn(['config', 'inject']);
    doc.setIn(['expect', 'violations'], doc.createNode([]));
    doc.setIn(['name'], `${String(doc.get('name'))}-control`);
    const control = path.join(tmp, `${path.basename(file, '.yaml')}-control.yaml`);
    writeFileSync(control, doc.toString());
    const { code, results, log, events } = await run(
      control,
      path.join(tmp, path.basename(control, '.yaml')),
    );
    expect(
      results.invariants.filter((i) => !i.ok).map((i) => i.name),
      log,
    ).toEqual([]);
    expect(code).toBe(0);
    controlShows[file]?.({ results, events });
  });
});
