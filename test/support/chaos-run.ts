/**
 * Running an example of examples/chaos/ as a user runs it (`mmlab run FILE --local`) and the
 * checks every one of them must pass: valid, healed, nothing lost, no lock left
 * (test/chaos.e2e-spec.ts, test/chaos-restarts.e2e-spec.ts).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, expect } from 'vitest';
import type { TraceEvent } from '@mmlab/protocol';
import { RunResults, type WorkloadResult } from '@mmlab/scenario';
import { runMmlab } from '@mmlab/testing';

export interface ChaosRun {
  results: RunResults;
  events: TraceEvent[];
  log: string;
}

/** A run(name, out?) for the calling file: its runs go to a temporary folder removed afterAll. */
export function useChaosRuns(): (name: string, out?: string) => Promise<ChaosRun> {
  const tmp = mkdtempSync(path.join(tmpdir(), 'mmlab-chaos-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));
  return async (name, out = name) => {
    const dir = path.join(tmp, out);
    const r = await runMmlab([
      'run',
      `examples/chaos/${name}.yaml`,
      '--local',
      '--out',
      dir,
      '--no-report',
    ]);
    const results = RunResults.parse(
      JSON.parse(readFileSync(path.join(dir, 'results.json'), 'utf8')),
    );
    const events = readFileSync(results.trace, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as TraceEvent);
    const log = r.stdout + r.stderr;
    // every chaos example: valid, healed, nothing lost, no lock left
    expect(results.verdict, log).toBe('valid');
    expect(r.code).toBe(0);
    expect(results.chaos?.locksLeft, log).toEqual([]);
    expect(results.chaos?.faults.every((f) => f.endMs !== null)).toBe(true);
    for (const w of results.workloads ?? []) {
      expect(w.impossibleReads, w.name).toBe(0);
      expect(w.window.ops, `${w.name} did something`).toBeGreaterThan(0);
    }
    return { results, events, log };
  };
}

export const workload = (r: ChaosRun, name: string): WorkloadResult => {
  const w = r.results.workloads?.find((x) => x.name === name);
  if (!w) throw new Error(`no workload ${name} in ${r.results.name}`);
  return w;
};
