/**
 * The chaos examples (examples/chaos/) whose checks do not depend on timing, run as a user runs
 * them (`mmlab run FILE --local`, the same checks as test/chaos.e2e-spec.ts): a subscriber
 * crashed in its callback (the crash is the callback's own, not a window), a subscriber killed
 * during an invalidation (fenced whether the kill lands in the callback or before it), Redis
 * and NATS killed and restarted under load (nothing lost, whatever the outage overlaps), an mm
 * replica killed inside a 3 s stall in a PT lock (the kill comes 500 ms in: seconds of margin)
 * and the seeded nemesis schedule (the same plan twice, whenever its faults land).
 * They run with the other files, two at a time; the examples that hit their race by timing
 * run alone at the end (test/chaos.e2e-spec.ts).
 */
import { describe, expect, it } from 'vitest';
import { type ChaosRun as Run, useChaosRuns, workload } from './support/chaos-run';

const run = useChaosRuns();

describe('examples/chaos/ (restarts)', () => {
  it('crashed-subscriber: a crash mid-callback is fenced, and the restarted HCA works again', async () => {
    const r = await run('crashed-subscriber');
    expect(r.events.some((e) => e.kind === 'sub.fault' && e.fault === 'crash')).toBe(true);
    expect(r.events.some((e) => e.kind === 'mn.fenced' && e.subscriber === 'hca0')).toBe(true);
  });

  it('killed-subscriber: killed during a 5 s invalidation, fenced, restarted', async () => {
    const r = await run('killed-subscriber');
    expect(r.events.some((e) => e.kind === 'mn.fenced' && e.subscriber === 'hca0')).toBe(true);
  });

  it('redis-nats-restart: both servers killed and started again under load, nothing lost', async () => {
    const r = await run('redis-nats-restart');
    const targets = r.results.chaos!.faults.map((f) => f.instance);
    expect(targets).toEqual(['redis', 'nats']);
    expect(workload(r, 'cpus').window.ops).toBeGreaterThan(0);
    expect(workload(r, 'rdma').window.ops).toBeGreaterThan(0);
  });

  it('mm-killed-holding-ptl: the nemesis kills the replica holding a PT lock; its lease expires', async () => {
    const r = await run('mm-killed-holding-ptl');
    const kill = r.results.chaos!.faults.find((f) => f.fault === 'kill')!;
    expect(kill.target).toBe('mm');
    expect(kill.instance).toMatch(/^mm-\d$/);
    // the killed replica took a PT lock it never released
    const acquired = r.events.filter(
      (e) => e.kind === 'ptl.acquire' && e.instance === kill.instance,
    );
    const released = new Set(
      r.events
        .filter((e) => e.kind === 'ptl.release' && e.instance === kill.instance)
        .map((e) => (e.kind === 'ptl.release' ? `${e.lock}|${e.token}` : '')),
    );
    expect(
      acquired.some((e) => e.kind === 'ptl.acquire' && !released.has(`${e.lock}|${e.token}`)),
    ).toBe(true);
  });

  it('schedule: the same seed runs the same fault sequence twice', async () => {
    // both at once: what is compared is the plan and what was injected, not when
    const [a, b] = await Promise.all([
      run('schedule', 'schedule-a'),
      run('schedule', 'schedule-b'),
    ]);
    const planA = a.results.chaos!.schedules[0].plan;
    expect(planA.length).toBe(6);
    expect(new Set(planA.map((p) => p.fault)).size).toBeGreaterThan(1);
    expect(b.results.chaos!.schedules[0].plan).toEqual(planA);
    // and what was injected is what was planned
    const injected = (x: Run) => x.results.chaos!.faults.map((f) => `${f.target} ${f.fault}`);
    expect(injected(b)).toEqual(injected(a));
  });
});
