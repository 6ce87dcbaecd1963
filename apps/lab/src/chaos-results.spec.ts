import { describe, expect, it } from 'vitest';
import type { TraceEvent } from '@mmlab/protocol';
import { ChaosSpec } from '@mmlab/scenario';
import { chaosResults } from './chaos-results';
import type { RunOutcome } from './scenario-runner';

const T0 = 1_000_000;
const base = (kind: string, ts: number) => ({
  id: `x:${ts}`,
  ts,
  service: 'mm',
  instance: 'mm-0',
  kind,
});
const faultEnd = (ts: number, durMs: number) =>
  ({
    ...base('fault.end', ts),
    pid: 1,
    addr: 0x10000000,
    access: 'read',
    agent: 'cpu0',
    result: 'ok',
    durMs,
  }) as unknown as TraceEvent;
const release = (ts: number, heldMs: number, lock = 'ptl:128') =>
  ({
    ...base('ptl.release', ts),
    pid: 1,
    lock,
    owner: 'mm-0/f',
    token: 1,
    heldMs,
    released: true,
  }) as unknown as TraceEvent;

const outcome = (over: Partial<RunOutcome>): RunOutcome => ({
  verdict: 'valid',
  steps: [],
  rawEvents: [],
  events: [],
  invariants: [],
  startedAtTs: T0,
  ...over,
});

describe(chaosResults.name, () => {
  const window = {
    id: 1,
    target: 'hca0',
    instance: 'hca0',
    fault: 'pause' as const,
    spec: ChaosSpec.parse({ target: 'hca0', fault: 'pause' }),
    label: 'pause hca0',
    startedAt: T0 + 100,
    endedAt: T0 + 200,
  };

  it('splits fault latency by whether the fault overlapped a window, and finds the longest hold', () => {
    const events = [
      faultEnd(T0 + 50, 10),
      faultEnd(T0 + 150, 120),
      faultEnd(T0 + 300, 5),
      release(T0 + 160, 30),
      release(T0 + 400, 7),
    ];
    const c = chaosResults(outcome({ faults: [window] }), events);
    expect(c.latency.inFaults).toEqual({ count: 1, p50Ms: 120, p99Ms: 120, maxMs: 120 });
    expect(c.latency.outsideFaults.count).toBe(2);
    expect(c.longestPtlHold).toMatchObject({ ms: 30, lock: 'ptl:128', atMs: 160 });
    expect(c.faults).toEqual([
      {
        id: 1,
        target: 'hca0',
        instance: 'hca0',
        fault: 'pause',
        label: 'pause hca0',
        startMs: 100,
        endMs: 200,
      },
    ]);
  });

  it('counts steps and workload accesses as ok, failed definitely or indefinitely', () => {
    const steps = [
      { index: 0, line: 1, op: 'munmap', ok: true, durationMs: 1 },
      {
        index: 1,
        line: 2,
        op: 'cpu.read',
        ok: false,
        durationMs: 1,
        error: { code: 'ETIMEDOUT', message: '' },
      },
      {
        index: 2,
        line: 3,
        op: 'cpu.read',
        ok: true,
        durationMs: 1,
        error: { code: 'SIGSEGV', message: '' },
      },
      { index: 3, line: 4, op: 'chaos', ok: true, durationMs: 1 },
    ];
    const c = chaosResults(outcome({ steps }), []);
    expect(c.operations).toEqual({
      ok: 1,
      failedDefinite: 1,
      failedIndefinite: 1,
      byCode: { ETIMEDOUT: 1, SIGSEGV: 1 },
    });
    expect(c.longestPtlHold).toBeNull();
  });
});
