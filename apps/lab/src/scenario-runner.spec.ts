import type { InvariantVerdict } from '@mmlab/checker';
import type { TraceEvent } from '@mmlab/protocol';
import type { StepResult } from '@mmlab/scenario';
import { describe, expect, it } from 'vitest';
import { labServices } from '@mmlab/runner';
import { labConfigOf } from './lab-connection';
import { computeMetrics, percentile } from './metrics';
import { judge } from './scenario-runner';
import { formatSummary } from './summary';

const step = (ok: boolean): StepResult => ({
  index: 0,
  line: 1,
  op: 'process.create',
  ok,
  durationMs: 1,
});
const inv = (name: InvariantVerdict['name'], ok: boolean): InvariantVerdict => ({
  name,
  ok,
  checked: 1,
  violations: ok ? [] : [{ message: 'x', events: [] }],
});

describe(judge.name, () => {
  it('is valid when every step is ok and nothing is violated', () => {
    expect(judge([step(true)], [inv('paired-range', true)], [])).toBe('valid');
  });
  it('is invalid when a step is not ok', () => {
    expect(judge([step(true), step(false)], [], [])).toBe('invalid');
  });
  it('wants exactly the expected violations, no more and no fewer', () => {
    const v = [inv('paired-range', false), inv('fenced-writes', true)];
    expect(judge([step(true)], v, ['paired-range'])).toBe('valid');
    expect(judge([step(true)], v, [])).toBe('invalid');
    expect(judge([step(true)], v, ['paired-range', 'fenced-writes'])).toBe('invalid');
  });
});

describe(computeMetrics.name, () => {
  it('takes nearest-rank percentiles of fault.end durMs and ptl.release heldMs', () => {
    expect(percentile([], 50)).toBeNull();
    expect(percentile([1, 2, 3, 4], 50)).toBe(2);
    expect(percentile([1, 2, 3, 4], 99)).toBe(4);
    const base = { ts: 1, service: 'mm', instance: 'mm-0', pid: 1 } as const;
    const faults = [5, 1, 3].map((durMs, i): TraceEvent => ({
      ...base,
      id: `f${i}`,
      kind: 'fault.end',
      addr: 0,
      access: 'read',
      agent: 'cpu0',
      result: 'ok',
      durMs,
      retries: 0,
    }));
    const release: TraceEvent = {
      ...base,
      id: 'r',
      kind: 'ptl.release',
      lock: 'ptl:0',
      owner: 'mm-0',
      token: 1,
      heldMs: 2,
      released: true,
    };
    const m = computeMetrics([...faults, release]);
    expect(m.faults).toEqual({ count: 3, p50Ms: 3, p90Ms: 5, p99Ms: 5, maxMs: 5 });
    expect(m.ptlHold).toEqual({ count: 1, p50Ms: 2, p99Ms: 2, maxMs: 2 });
    expect(m.events).toEqual({ total: 4, byKind: { 'fault.end': 3, 'ptl.release': 1 } });
  });
});

describe(formatSummary.name, () => {
  it('lists a parallel step that is not ok, then its culprits by path', () => {
    const nested: StepResult = {
      index: 1,
      path: 'steps[1].branches[1][1]',
      line: 10,
      op: 'cpu.write',
      ok: false,
      reason: 'failed with SIGSEGV',
      durationMs: 1,
    };
    const par: StepResult = {
      index: 1,
      path: 'steps[1]',
      line: 5,
      op: 'parallel',
      ok: false,
      reason: '1 step(s) of its branches not ok: steps[1].branches[1][1] (line 10)',
      durationMs: 2,
      branches: [[{ ...nested, index: 0, path: 'steps[1].branches[0][0]', ok: true }], [nested]],
    };
    const text = formatSummary(
      {
        name: 't',
        seed: null,
        config: { mode: 'patched', frames: 1, cpus: 1, mmReplicas: 1 },
        verdict: 'invalid',
        startedAt: '',
        durationMs: 10,
        steps: [step(true), par],
        invariants: [],
        metrics: computeMetrics([]),
        trace: 'trace.jsonl',
      },
      'results.json',
    );
    expect(text.split('\n').slice(1, 3)).toEqual([
      '  step 1 (line 5) parallel: 1 step(s) of its branches not ok: steps[1].branches[1][1] (line 10)',
      '  step steps[1].branches[1][1] (line 10) cpu.write: failed with SIGSEGV',
    ]);
  });
});

describe(labConfigOf.name, () => {
  it('passes subscribers, dispatch, inject and seed to LocalLab, with the documented defaults', () => {
    const base = { mode: 'legacy', frames: 64, cpus: 1, mmReplicas: 1 } as const;
    expect(labConfigOf(base)).toEqual({
      ...base,
      leaseTtlMs: undefined,
      softlockupMs: undefined,
      subscribers: [],
      dispatch: 'parallel',
      inject: [],
      env: {},
    });
    expect(
      labConfigOf(
        {
          ...base,
          subscribers: [
            { name: 'hca0', kind: 'hca', invalidateLatencyMs: 'uniform:1:2' },
            { name: 'hca1', kind: 'hca', npfDelayMs: 30 },
          ],
          dispatch: 'serial',
          inject: ['range-end-mismatch'],
          subscriberLeaseMs: 15_000,
          callbackTimeoutMs: 500,
          memlockPages: 12,
        },
        42,
      ),
    ).toMatchObject({
      memlockPages: 12,
      subscribers: [
        { name: 'hca0', kind: 'hca', invalidateLatencyMs: 'uniform:1:2' },
        { name: 'hca1', kind: 'hca', npfDelayMs: 30 },
      ],
      dispatch: 'serial',
      inject: ['range-end-mismatch'],
      seed: 42,
      env: { MMLAB_SUBSCRIBER_LEASE_MS: '15000', MMLAB_CALLBACK_TIMEOUT_MS: '500' },
    });
    // memlockPages reaches mm as RLIMIT_MEMLOCK; unset, mm takes a quarter of the frames
    const mmEnv = (cfg: Parameters<typeof labServices>[0]) =>
      labServices(cfg, 0).find((x) => x.app === 'mm')!.env;
    expect(mmEnv(labConfigOf({ ...base, memlockPages: 12 })).MMLAB_MEMLOCK_PAGES).toBe('12');
    expect(mmEnv(labConfigOf(base))).not.toHaveProperty('MMLAB_MEMLOCK_PAGES');
  });
});
