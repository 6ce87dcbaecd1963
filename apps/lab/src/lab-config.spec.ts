/**
 * A scenario against a running lab: the lab's config as its services report it, compared with
 * the scenario's (what cannot change for one run refuses the run); fault windows opened on the
 * lab before a run; where a run's files go when it could not complete.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { ServiceConfig, TraceEvent } from '@mmlab/protocol';
import { afterAll, describe, expect, it } from 'vitest';
import { configDifferences, runningConfig } from './lab-connection';
import { destinationOf } from './run-command';
import { windowsOpenAt } from './scenario-runner';

const svc = (
  service: string,
  instance: string,
  over: Partial<ServiceConfig> = {},
): ServiceConfig => ({
  service,
  instance,
  mode: 'patched',
  frames: 256,
  leaseTtlMs: 2000,
  softlockupMs: 1000,
  dispatch: 'parallel',
  inject: [],
  callbackTimeoutMs: 2000,
  subscriberLeaseMs: 3000,
  invalidateLatency: '0',
  npfDelayMs: 0,
  memlockPages: 64,
  ...over,
});

const lab = (over: Partial<ServiceConfig> = {}, hca: Partial<ServiceConfig> = {}) =>
  runningConfig(
    [
      svc('observer', 'observer', over),
      svc('mm', 'mm-0', over),
      svc('mm', 'mm-1', over),
      svc('cpu', 'cpu0', over),
      svc('cpu', 'cpu1', over),
      svc('cpu', 'cpu2', over),
      svc('hca', 'hca0', { ...over, ...hca }),
    ],
    256,
  );

describe('runningConfig and configDifferences', () => {
  const scenario = { mode: 'patched' as const, frames: 256, cpus: 2, mmReplicas: 2 };

  it('reads the lab as a scenario config, and a matching scenario has no differences', () => {
    const { config, mixed } = lab();
    expect(mixed).toEqual([]);
    expect(config).toMatchObject({ mode: 'patched', frames: 256, cpus: 3, mmReplicas: 2 });
    expect(config.subscribers).toEqual([
      { name: 'hca0', kind: 'hca', invalidateLatencyMs: 0, npfDelayMs: 0 },
    ]);
    expect(configDifferences(scenario, config)).toEqual([]);
  });

  it('names every setting that differs: mode, frames, dispatch, memlock, inject, a subscriber latency, too few CPUs', () => {
    const { config } = lab(
      { mode: 'legacy', dispatch: 'serial', inject: ['range-end-mismatch'] },
      { invalidateLatency: 'uniform:1:5' },
    );
    const want = {
      ...scenario,
      frames: 128,
      cpus: 4,
      subscribers: [{ name: 'hca0', kind: 'hca' as const, invalidateLatencyMs: 50 }],
    };
    expect(configDifferences(want, config)).toEqual([
      'mode: the scenario asks for "patched", the lab runs "legacy"',
      'frames: the scenario asks for 128, the lab runs 256',
      'cpus: the scenario asks for 4, the lab has 3',
      'dispatch: the scenario asks for "parallel", the lab runs "serial"',
      'memlockPages: the scenario asks for 32, the lab runs 64',
      'inject: the scenario asks for [], the lab runs ["range-end-mismatch"]',
      'hca0.invalidateLatencyMs: the scenario asks for "50", the lab runs "uniform:1:5"',
    ]);
  });

  it('a subscriber the lab does not run, and replicas that disagree', () => {
    const { config, mixed } = runningConfig(
      [svc('mm', 'mm-0'), svc('mm', 'mm-1', { mode: 'legacy' }), svc('cpu', 'cpu0')],
      256,
    );
    expect(mixed).toEqual(['mode: mm-0 runs patched, mm-1 legacy']);
    expect(
      configDifferences(
        { ...scenario, cpus: 1, subscribers: [{ name: 'hca1', kind: 'hca' }] },
        config,
      ),
    ).toEqual(['subscriber hca1: not in the lab']);
  });
});

const chaos = (
  kind: 'chaos.start' | 'chaos.end',
  ts: number,
  target = 'hca0',
  fault = 'latency',
): Extract<TraceEvent, { kind: 'chaos.start' | 'chaos.end' }> =>
  kind === 'chaos.start'
    ? {
        id: `e${ts}`,
        ts,
        service: 'lab',
        instance: 'lab-api',
        kind,
        target,
        fault,
        label: `${fault} ${target}`,
      }
    : { id: `e${ts}`, ts, service: 'lab', instance: 'lab-api', kind, target, fault };

describe(windowsOpenAt.name, () => {
  it('keeps the windows opened before and not healed before, with their end during the run', () => {
    const before = [
      chaos('chaos.start', 1, 'cpu0', 'pause'),
      chaos('chaos.end', 2, 'cpu0', 'pause'),
      chaos('chaos.start', 3),
      chaos('chaos.start', 4, 'hca0', 'drop-ack'),
    ];
    const during = [chaos('chaos.end', 10, 'hca0', 'drop-ack')];
    expect(windowsOpenAt(before, during)).toEqual([
      {
        by: 'lab-api',
        target: 'hca0',
        fault: 'latency',
        label: 'latency hca0',
        startedAt: 3,
        endedAt: null,
      },
      {
        by: 'lab-api',
        target: 'hca0',
        fault: 'drop-ack',
        label: 'drop-ack hca0',
        startedAt: 4,
        endedAt: 10,
      },
    ]);
  });
});

describe(destinationOf.name, () => {
  const tmp = mkdtempSync(path.join(tmpdir(), 'mmlab-dest-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));
  const withVerdict = (name: string, verdict: string) => {
    const d = path.join(tmp, name);
    mkdirSync(d, { recursive: true });
    writeFileSync(
      path.join(d, 'results.json'),
      JSON.stringify({
        name,
        seed: null,
        config: {},
        verdict,
        startedAt: '',
        durationMs: 0,
        steps: [],
        invariants: [],
        metrics: {
          faults: { count: 0, p50Ms: null, p90Ms: null, p99Ms: null, maxMs: null },
          ptlHold: { count: 0, p50Ms: null, p99Ms: null, maxMs: null },
          events: { total: 0, byKind: {} },
        },
        trace: '',
      }),
    );
    return d;
  };

  it('a run that could not complete goes beside a complete one, never over it', () => {
    const good = withVerdict('good', 'valid');
    expect(destinationOf(good, 'unknown')).toBe(`${good}.unknown`);
    expect(destinationOf(good, 'invalid')).toBe(good);
    const bad = withVerdict('bad', 'invalid');
    expect(destinationOf(bad, 'unknown')).toBe(`${bad}.unknown`);
    const failed = withVerdict('failed', 'unknown');
    expect(destinationOf(failed, 'unknown')).toBe(failed);
    expect(destinationOf(path.join(tmp, 'none'), 'unknown')).toBe(path.join(tmp, 'none'));
  });
});
