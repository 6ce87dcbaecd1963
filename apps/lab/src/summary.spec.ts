/** The summary line says whether the violated invariants were the ones the scenario expects. */
import type { InvariantResult, RunResults } from '@mmlab/scenario';
import { describe, expect, it } from 'vitest';
import { computeMetrics } from './metrics';
import { formatSummary } from './summary';

const inv = (name: string, ok: boolean): InvariantResult => ({
  name,
  ok,
  checked: 1,
  violations: ok ? [] : [{ message: `${name} broken`, events: [] }],
});

const results = (over: Partial<RunResults>): RunResults => ({
  name: 'inject',
  seed: null,
  config: { mode: 'patched', frames: 1, cpus: 1, mmReplicas: 1 },
  verdict: 'valid',
  startedAt: '',
  durationMs: 1000,
  steps: [],
  invariants: [
    inv('paired-range', false),
    inv('teardown-before-free', false),
    ...['a', 'b', 'c', 'd', 'e', 'f'].map((n) => inv(n, true)),
  ],
  metrics: computeMetrics([]),
  trace: 'trace.jsonl',
  ...over,
});

describe(formatSummary.name, () => {
  it('says the violations were expected when they are exactly the expected ones', () => {
    const text = formatSummary(
      results({ expectedViolations: ['paired-range', 'teardown-before-free'] }),
      'r.json',
    );
    expect(text.split('\n')[0]).toBe(
      'inject: VALID — 0/0 steps ok, 2 of 8 invariants violated, as the scenario expects, 1.0 s',
    );
    expect(text).toContain(
      '  invariant paired-range (expected): 1 violation(s), first: paired-range broken',
    );
  });

  it('counts the expected ones among more, and names an expected violation that did not happen', () => {
    const text = formatSummary(
      results({ verdict: 'invalid', expectedViolations: ['paired-range', 'fenced-writes'] }),
      'r.json',
    );
    expect(text.split('\n')[0]).toContain('2 of 8 invariants violated (1 of them expected)');
    expect(text).toContain('  invariant teardown-before-free: 1 violation(s)');
    expect(text).toContain('  invariant fenced-writes: expected to be violated, but held');
  });

  it('says nothing of expectations when none were expected', () => {
    const text = formatSummary(results({ verdict: 'invalid' }), 'r.json');
    expect(text.split('\n')[0]).toContain('2 of 8 invariants violated, 1.0 s');
  });

  it("prints the events of an unexpected violation's first instance, one a line", () => {
    const read = {
      id: 'cpu1:9',
      ts: 12.5,
      service: 'cpu',
      instance: 'cpu1',
      kind: 'access',
      rw: 'read',
      value: 5,
    };
    const r = results({ verdict: 'invalid', expectedViolations: ['paired-range'] });
    r.invariants[1] = { ...r.invariants[1], violations: [{ message: 'x', events: [read] }] };
    r.invariants[0] = { ...r.invariants[0], violations: [{ message: 'y', events: [read] }] };
    const lines = formatSummary(r, 'r.json').split('\n');
    const at = lines.findIndex((l) => l.startsWith('  invariant teardown-before-free'));
    expect(lines[at + 1]).toBe('    cpu1:9 access ts=12.500 {"rw":"read","value":5}');
    // an expected one's events are not printed
    const exp = lines.findIndex((l) => l.startsWith('  invariant paired-range (expected)'));
    expect(lines[exp + 1]).not.toContain('cpu1:9');
  });
});
