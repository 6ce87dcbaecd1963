/**
 * examples/seed/: one scenario per call site of the seed (README's seed table), each run in
 * both eras as `mmlab run --local` runs it — valid in v3.7; in v3.6 exactly no-sleep-under-ptlock
 * where v3.6 sent a sleepable callback under the PT lock (eras/v3_6.ts), nothing where it was
 * already outside. The examples another test file runs in both eras with checks of their own
 * (the reclaim and files examples) are only checked to be run there.
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SEED_ROWS, SEED_SITES, type SeedSite, V3_6, sleepsUnderPtl } from '@mmlab/protocol';
import { repoRoot } from '@mmlab/runner';
import { LEGACY_TWIN_OK, outcomeOf, runScenario } from '@mmlab/testing';

const root = repoRoot();
const files = readdirSync(path.join(root, 'examples/seed')).filter((f) => f.endsWith('.yaml'));
const siteOf = (file: string): SeedSite => {
  const site = path.basename(file, '.yaml');
  if (!(SEED_SITES as readonly string[]).includes(site))
    throw new Error(`examples/seed/${file} is named after no seed site`);
  return site as SeedSite;
};
/** The test files (other than this one) that run an example, by its path. */
const runElsewhere = (example: string): string[] =>
  readdirSync(path.join(root, 'test'))
    .filter((f) => f.endsWith('.e2e-spec.ts') && f !== 'seed-examples.e2e-spec.ts')
    .filter((f) => readFileSync(path.join(root, 'test', f), 'utf8').includes(example));

describe('examples/seed/', () => {
  it('has one example per modelled seed site, named after it, and the README table points to each', () => {
    const named = files.map(siteOf);
    for (const site of SEED_SITES) {
      const ex = SEED_ROWS[site].example;
      if (ex) expect(files, site).toContain(path.basename(ex));
    }
    for (const site of named)
      expect(SEED_ROWS[site].example, site).toBe(`examples/seed/${site}.yaml`);
  });

  const tmp = mkdtempSync(path.join(tmpdir(), 'mmlab-seed-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));
  const own = files.filter((f) => runElsewhere(`examples/seed/${f}`).length === 0);
  const elsewhere = files.filter((f) => !own.includes(f));

  it.each(elsewhere)('%s runs in a test file of its own, in both eras', (file) => {
    const tests = runElsewhere(`examples/seed/${file}`);
    const text = tests.map((t) => readFileSync(path.join(root, 'test', t), 'utf8')).join('\n');
    expect(text).toMatch(/runLegacyTwin|kernel', 'v3\.6'|mode', 'legacy'/);
  });

  it.each(own.flatMap((f) => [[f, 'v3.7'] as const, [f, 'v3.6'] as const]))(
    '%s in %s',
    async (file, kernel) => {
      const site = siteOf(file);
      const v36Breaks = sleepsUnderPtl(V3_6.notify[site]);
      const run = await runScenario(
        `examples/seed/${file}`,
        `seed-${site}-${kernel}`,
        tmp,
        (doc) => {
          doc.deleteIn(['config', 'mode']);
          doc.setIn(['config', 'kernel'], kernel);
          if (kernel === 'v3.6' && v36Breaks)
            doc.setIn(['expect', 'violations'], ['no-sleep-under-ptlock']);
        },
      );
      const want =
        kernel === 'v3.6' && v36Breaks
          ? LEGACY_TWIN_OK
          : { verdict: 'valid', code: 0, stepsOk: true, broken: [] };
      expect(outcomeOf(run), run.log).toEqual(want);
      // the run really went through the site's notifier: a range or a page callback was sent
      expect(
        run.events.some((e) => e.kind === 'mn.send' && e.subscriber === 'hca0'),
        'hca0 was sent callbacks',
      ).toBe(true);
    },
  );
});
