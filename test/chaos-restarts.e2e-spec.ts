/**
 * The chaos examples (examples/chaos/) whose checks do not depend on timing, run as a user runs
 * them (`mmlab run FILE --local`, the same checks as test/chaos.e2e-spec.ts): a subscriber
 * crashed in its callback (the crash is the callback's own, not a window), a subscriber killed
 * during an invalidation (fenced whether the kill lands in the callback or before it), and
 * Redis and NATS killed and restarted under load (nothing lost, whatever the outage overlaps).
 * They run with the other files, two at a time; the examples that hit their race by timing
 * run alone at the end (test/chaos.e2e-spec.ts).
 */
import { describe, expect, it } from 'vitest';
import { useChaosRuns, workload } from './support/chaos-run';

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
});
