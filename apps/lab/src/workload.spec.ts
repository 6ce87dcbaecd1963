import { describe, expect, it } from 'vitest';
import { MmlabError } from '@mmlab/protocol';
import type { RpcClient } from '@mmlab/runtime';
import { Tally, runKvmWorkload, workloadProblem } from './workload';

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

/**
 * A VM's guest memory as kvm0 answers kvmGuestRead / kvmGuestWrite, with what the test breaks:
 * `lose` drops every store to that gfn (a lost write), `efault` refuses every access.
 */
function fakeKvm(opts: { lose?: number; efault?: boolean } = {}) {
  const mem = new Map<number, number>();
  const seen: Array<{ id: unknown; vcpu: number; gfn: number }> = [];
  const rpc = {
    call: (
      name: string,
      req: { vm: number; vcpu: number; gfn: number; value?: number },
      o: { id?: unknown },
    ) => {
      seen.push({ id: o.id, vcpu: req.vcpu, gfn: req.gfn });
      if (opts.efault) return Promise.reject(new MmlabError('EFAULT', 'no host page'));
      const faults = mem.has(req.gfn) ? 0 : 1;
      if (name === 'kvmGuestWrite') {
        if (req.gfn !== opts.lose) mem.set(req.gfn, req.value!);
        return Promise.resolve({ value: req.value, faults });
      }
      return Promise.resolve({ value: mem.get(req.gfn) ?? 0, faults });
    },
  } as unknown as RpcClient;
  return { rpc, seen };
}

describe(runKvmWorkload.name, () => {
  const spec = {
    name: 'guest',
    kvm: 'kvm0',
    vm: 1,
    vcpus: 2,
    gfn: 16,
    pages: 4,
    ops: 200,
    writeRatio: 0.5,
    seed: 3,
  };

  it('each vCPU loads and stores its own slice of the guest frames; every load checked', async () => {
    const { rpc, seen } = fakeKvm();
    const r = await runKvmWorkload(rpc, spec, 1000);
    expect(r).toMatchObject({ kind: 'kvm', ops: 200, impossibleReads: 0, unexpected: 0 });
    expect(r.reads + r.writes).toBe(200);
    expect(r.faults).toBeGreaterThan(0);
    expect(workloadProblem(r)).toBeUndefined();
    expect(new Set(seen.map((x) => x.id))).toEqual(new Set(['kvm0']));
    // vCPU 0 has gfns 16, 17; vCPU 1 has 18, 19
    for (const x of seen) expect((x.gfn - 16) >> 1, `vcpu ${x.vcpu} gfn ${x.gfn}`).toBe(x.vcpu);
  });

  it('a lost guest store is an impossible read; EFAULT is an error of the lab', async () => {
    const lost = await runKvmWorkload(fakeKvm({ lose: 17 }).rpc, spec, 1000);
    expect(lost.impossibleReads).toBeGreaterThan(0);
    expect(lost.impossible[0]).toMatchObject({ agent: 'kvm0/vm1/vcpu0', page: 1 });
    expect(workloadProblem(lost)).toMatch(/no write explains/);
    const refused = await runKvmWorkload(fakeKvm({ efault: true }).rpc, spec, 1000);
    expect(refused.unexpected).toBe(200);
    expect(workloadProblem(refused)).toMatch(/EFAULT/);
  });

  it('refuses more vCPUs than frames', async () => {
    const e = await runKvmWorkload(fakeKvm().rpc, { ...spec, vcpus: 5 }, 1000).catch(
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(MmlabError);
    expect((e as MmlabError).code).toBe('EINVAL');
  });
});
