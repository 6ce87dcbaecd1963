import { describe, expect, it } from 'vitest';
import { MmlabError } from '@mmlab/protocol';
import { Tally, workloadProblem } from './workload';

const TOLERATED = new Set(['EAGAIN']);
const tally = () => new Tally('w', 'cpu', { ops: 100, seed: 1 }, TOLERATED);
const ok =
  (value: number, faults = 0) =>
  () =>
    Promise.resolve({ value, faults });
const fail = (code: 'ETIMEDOUT' | 'EAGAIN' | 'SIGSEGV') => () =>
  Promise.reject(new MmlabError(code, 'test'));

describe(Tally.name, () => {
  it('accepts a read of the last acknowledged write and flags any other value', async () => {
    const t = tally();
    await t.access('cpu0', 3, 7, ok(7, 1));
    await t.access('cpu0', 3, undefined, ok(7));
    expect(workloadProblem(t.finish())).toBeUndefined();
    const u = tally();
    await u.access('cpu0', 3, 7, ok(7));
    await u.access('cpu0', 3, undefined, ok(6)); // a lost write
    const r = u.finish();
    expect(r.impossibleReads).toBe(1);
    expect(r.impossible[0]).toEqual({ agent: 'cpu0', page: 3, got: 6, allowed: [7] });
    expect(workloadProblem(r)).toMatch(/no write explains/);
  });

  it('after an indefinite write failure either value may be read, then only the one read', async () => {
    const t = tally();
    await t.access('cpu0', 1, 5, ok(5));
    await t.access('cpu0', 1, 6, fail('ETIMEDOUT'));
    await t.access('cpu0', 1, undefined, ok(5)); // the write did not land: fine
    await t.access('cpu0', 1, undefined, ok(6)); // ...but now it cannot appear
    const r = t.finish();
    expect(r.failed).toEqual({ definite: 0, indefinite: 1, byCode: { ETIMEDOUT: 1 } });
    expect(r.impossibleReads).toBe(1);
  });

  it('a zapped page reads zero; a definite failure changes nothing', async () => {
    const t = tally();
    await t.access('cpu0', 2, 9, ok(9));
    await t.zap([2], () => Promise.resolve());
    await t.access('cpu0', 2, 4, fail('EAGAIN'));
    await t.access('cpu0', 2, undefined, ok(0));
    const r = t.finish();
    expect(r.impossibleReads).toBe(0);
    expect(r.unexpected).toBe(0);
    expect(workloadProblem(r)).toBeUndefined();
  });

  it('a failure faults do not explain fails the workload', async () => {
    const t = tally();
    await t.access('cpu0', 2, 9, ok(9));
    await t.access('cpu0', 2, undefined, fail('SIGSEGV'));
    expect(workloadProblem(t.finish())).toMatch(/SIGSEGV/);
  });

  it('stops after ops and counts throughput over the operations that completed', async () => {
    const t = new Tally('w', 'cpu', { ops: 2, seed: 1 }, TOLERATED);
    expect(t.take()).toBe(true);
    await t.access('cpu0', 0, 1, ok(1, 2));
    expect(t.take()).toBe(true);
    await t.access('cpu0', 0, undefined, fail('EAGAIN'));
    expect(t.take()).toBe(false);
    const r = t.finish();
    expect(r.window.ops).toBe(1);
    expect(r.window.faults).toBe(2);
    expect(r.ops).toBe(2);
  });
});
