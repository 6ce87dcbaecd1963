/**
 * The checks every fault-injection example (examples/inject/) must pass, run as a user runs it
 * (`mmlab run FILE --local`), and those of its control (the same scenario without the
 * injection): test/examples.e2e-spec.ts applies them to every injection example, and a test
 * file that runs an example (or its control) unchanged with checks of its own applies them
 * there instead, so that examples.e2e does not run the same scenario a second time
 * (CHECKED_ELSEWHERE in examples.e2e-spec.ts).
 */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import type { Document } from 'yaml';
import { expect } from 'vitest';
import { parseScenario } from '@mmlab/scenario';
import { repoRoot } from '@mmlab/runner';
import type { ScenarioRun } from '@mmlab/testing';

/**
 * The injected run of file: valid (exit 0) because the checker caught exactly the invariants
 * the example expects broken, each naming its offending events.
 */
export function expectInjectionCaught(run: ScenarioRun, file: string): void {
  expect(run.results.verdict, run.log).toBe('valid');
  expect(run.code).toBe(0);
  const parsed = parseScenario(readFileSync(path.join(repoRoot(), file), 'utf8'), file);
  if (!parsed.ok) throw new Error(parsed.errors.join('\n'));
  const expected = parsed.scenario.expect.violations;
  expect(expected.length).toBeGreaterThan(0);
  for (const name of expected) {
    const v = run.results.invariants.find((i) => i.name === name)!;
    expect(v.ok, name).toBe(false);
    expect(v.violations[0].events.length, `${name} names its offending events`).toBeGreaterThan(0);
  }
}

/** The control of an injection example: the same scenario without config.inject, expecting nothing broken. */
export function withoutInjection(doc: Document): void {
  doc.deleteIn(['config', 'inject']);
  doc.setIn(['expect', 'violations'], doc.createNode([]));
}

/** The control run broke no invariant and exited 0. */
export function expectControlClean(run: ScenarioRun): void {
  expect(
    run.results.invariants.filter((i) => !i.ok).map((i) => i.name),
    run.log,
  ).toEqual([]);
  expect(run.code).toBe(0);
}
