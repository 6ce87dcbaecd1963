/**
 * mmap_sem modes that v3.7 / 3.19 take and the lab must too, against real services: two mm
 * replicas, one CPU and hca0 as processes, a real nats-server and redis-server.
 *
 * - A pinned registration (3.19 ib_umem_get) holds mmap_sem for write across the RLIMIT_MEMLOCK
 *   check, the pinned_vm charge and every page's fault and pin: its own faults go on, every
 *   other writer and every other fault of the process waits for it.
 * - exit (v3.7 exit_mmap, run by the last mmput) takes no mmap_sem: it does not wait for a
 *   reader or a writer that is still in the mm, and leaves no PTE and no frame behind.
 *
 * What holds an operation in the middle is hca0's `hang` callback fault on
 * invalidate_range_start (until healed; its liveness lease stays alive, so mm waits, never
 * fences). Nothing here asserts on durations: only on trace events, their order (within one
 * replica) and mmap_sem fencing tokens (one counter per mm, so they order acquisitions across
 * replicas), and on the state in Redis.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type EventOf,
  PAGE_SIZE,
  type Req,
  type Res,
  type RpcName,
  type SubFault,
  type TraceEvent,
  type TraceKind,
} from '@mmlab/protocol';
import type { Store } from '@mmlab/model';
import type { RpcClient } from '@mmlab/runtime';
import { type TestLab, type TraceLog, codeOf, startTestLab, until } from '@mmlab/testing';

const HCA = 'hca0';
const CPU = 'cpu0';

describe('mmap_sem: a pinned registration takes it for write, exit takes none', () => {
  let t: TestLab | undefined;
  let rpc: RpcClient;
  let store: Store;
  let trace: TraceLog;

  beforeAll(async () => {
    t = await startTestLab(
      {
        mode: 'patched',
        frames: 64,
        cpus: 1,
        mmReplicas: 2,
        subscribers: [{ name: HCA, kind: 'hca', invalidateLatencyMs: 0 }],
      },
      { rpcTimeoutMs: 30_000 },
    );
    ({ rpc, store, trace } = t);
  });
  afterAll(async () => {
    await t?.stop();
  });

  const hca = <N extends RpcName>(name: N, req: Req<N>): Promise<Res<N>> =>
    rpc.call(name, req, { id: HCA });
  const chaos = (faults: SubFault[]) => hca('subChaos', { faults });
  const hang = () => chaos([{ fault: 'hang', callbacks: ['invalidate_range_start'] }]);
  const space = async (pages: number) => {
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages, prot: 'rw' });
    return { pid, addr, page: (i: number) => addr + i * PAGE_SIZE };
  };
  const of = <K extends TraceKind>(
    all: TraceEvent[],
    kind: K,
    pred: (e: EventOf<K>) => boolean = () => true,
  ): Array<EventOf<K>> =>
    all.filter((e): e is EventOf<K> => e.kind === kind && pred(e as EventOf<K>));
  /** the one event of that kind and predicate */
  const one = <K extends TraceKind>(
    all: TraceEvent[],
    kind: K,
    pred: (e: EventOf<K>) => boolean,
  ): EventOf<K> => {
    const found = of(all, kind, pred);
    expect(found, kind).toHaveLength(1);
    return found[0];
  };
  /** Until hca0 sits (hang) in an invalidate_range_start of pid. */
  const hungOn = (pid: number) =>
    until(() => {
      const invs = new Set(
        of(trace.events, 'mn.range_start', (e) => e.pid === pid).map((e) => e.inv),
      );
      return of(trace.events, 'sub.fault', (e) => e.fault === 'hang' && invs.has(e.inv)).length > 0;
    }, `hca0 hung in a range start of pid ${pid}`);
  const isOp = (syscall: string) => (e: { op?: string }) => !!e.op?.includes(`/${syscall}#`);
  /** Track a call without letting its failure go unhandled; `done` says whether it settled. */
  const track = <T>(p: Promise<T>) => {
    const s = { done: false, p: p.finally(() => (s.done = true)) };
    s.p.catch(() => undefined);
    return s;
  };

  it('a pinned registration holds mmap_sem for write: its own faults go on, mprotect and a CPU fault wait', async () => {
    const { pid, page } = await space(5);
    // hca0 becomes a subscriber of the mm (an ODP MR elsewhere), so the COW below calls it.
    const { mr: odp } = await hca('hcaRegMr', {
      pid,
      addr: page(4),
      pages: 1,
      odp: true,
      access: ['read', 'write'],
    });
    // Page 0 maps the zero page read-only: the registration's write fault is a COW, whose
    // invalidate_range_start hca0 will sit on.
    await rpc.call('cpuAccess', { pid, addr: page(0), op: 'read' }, { id: 0 });
    await hang();

    const reg = track(
      hca('hcaRegMr', { pid, addr: page(0), pages: 2, odp: false, access: ['read', 'write'] }),
    );
    await hungOn(pid);
    // A CPU store to another page of the process, then an mprotect of another page.
    const store2 = track(
      rpc.call('cpuAccess', { pid, addr: page(2), op: 'write', value: 9 }, { id: 0 }),
    );
    await trace.next(
      (e) => e.kind === 'fault.begin' && e.pid === pid && e.agent === CPU && e.addr === page(2),
    );
    const mprotect = track(rpc.call('mprotect', { pid, addr: page(3), pages: 1, prot: 'r' }));
    await until(
      async () => (await store.intents(pid)).some((i) => i.rec.syscall === 'mprotect'),
      'the mprotect under way',
    );

    // The registration is held in its COW; everything published so far has arrived.
    let all = await t!.settled();
    expect({ reg: reg.done, store: store2.done, mprotect: mprotect.done }).toEqual({
      reg: false,
      store: false,
      mprotect: false,
    });
    expect(
      of(all, 'fault.end', (e) => e.pid === pid && e.agent === CPU && e.addr === page(2)),
    ).toEqual([]);
    expect(of(all, 'mmap_sem.acquire', (e) => e.pid === pid && isOp('mprotect')(e))).toEqual([]);
    const regAcq = one(all, 'mmap_sem.acquire', (e) => e.pid === pid && isOp('gup')(e));
    expect(regAcq.mode).toBe('write');
    expect(of(all, 'mmap_sem.release', (e) => e.pid === pid && isOp('gup')(e))).toEqual([]);

    expect(await chaos([])).toEqual({ active: [] });
    const { mr: pinned } = await reg.p;
    await Promise.all([store2.p, mprotect.p]);
    all = await t!.settled();

    // The registration: acquire, its own faults of both pages (under the lease), release —
    // all on the one replica that ran it, so in this order in the trace.
    const regRel = one(all, 'mmap_sem.release', (e) => e.pid === pid && isOp('gup')(e));
    expect(regRel).toMatchObject({ mode: 'write', token: regAcq.token, released: true });
    const own = of(all, 'fault.end', (e) => e.pid === pid && e.agent === HCA);
    expect(own.map((e) => [e.addr, e.access, e.result, e.how])).toEqual([
      [page(0), 'write', 'ok', 'wp-copy'],
      [page(1), 'write', 'ok', 'anon'],
    ]);
    for (const f of own) {
      expect(all.indexOf(f)).toBeGreaterThan(all.indexOf(regAcq));
      expect(all.indexOf(f)).toBeLessThan(all.indexOf(regRel));
    }
    // mprotect took mmap_sem after the registration: a later token of the same mm's counter,
    // and writers exclude each other, so after the registration's release.
    const mpAcq = one(all, 'mmap_sem.acquire', (e) => e.pid === pid && isOp('mprotect')(e));
    expect(mpAcq.token).toBeGreaterThan(regAcq.token);
    // The CPU's fault was sent back by the write-held check, and finished.
    const cpuFault = one(
      all,
      'fault.end',
      (e) => e.pid === pid && e.agent === CPU && e.addr === page(2),
    );
    expect(cpuFault.result).toBe('ok');
    expect(cpuFault.retries).toBeGreaterThan(0);
    expect(await store.pinnedVm(pid)).toBe(2);

    await hca('hcaDeregMr', { mr: pinned });
    await hca('hcaDeregMr', { mr: odp });
    expect(await store.pinnedVm(pid)).toBe(0);
    await rpc.call('exit', { pid });
  });

  it('exit does not wait for a madvise holding mmap_sem for read: release, zap, gone; the madvise ends after', async () => {
    const before = await rpc.call('meminfo', {});
    const { pid, page } = await space(2);
    await rpc.call('cpuAccess', { pid, addr: page(0), op: 'write', value: 1 }, { id: 0 });
    await rpc.call('cpuAccess', { pid, addr: page(1), op: 'write', value: 2 }, { id: 0 });
    const { mr } = await hca('hcaRegMr', {
      pid,
      addr: page(0),
      pages: 2,
      odp: true,
      access: ['read', 'write'],
    });
    expect(await hca('hcaRdmaRead', { mr, addr: page(0) })).toMatchObject({ value: 1 });
    await hang();

    const madvise = track(
      rpc.call('madvise', { pid, addr: page(0), pages: 1, advice: 'dontneed' }),
    );
    await hungOn(pid);
    // madvise holds mmap_sem for read and sleeps in hca0's invalidate_range_start: the exit
    // goes on regardless (on v3.6/v3.7 no mmap_sem is taken by exit_mmap).
    const { freed } = await rpc.call('exit', { pid });
    let all = await t!.settled();
    expect(madvise.done).toBe(false);
    const mAcq = one(all, 'mmap_sem.acquire', (e) => e.pid === pid && isOp('madvise')(e));
    expect(mAcq.mode).toBe('read');
    expect(of(all, 'mmap_sem.release', (e) => e.pid === pid && isOp('madvise')(e))).toEqual([]);
    expect(of(all, 'mmap_sem.acquire', (e) => e.pid === pid && isOp('exit')(e))).toEqual([]);
    // release went to hca0 and was acked before the zap freed anything; then the mm is gone
    const exitOp = one(all, 'process.exit', (e) => e.pid === pid).op;
    const ev = all.filter((e) => 'op' in e && e.op === exitOp);
    const at = (k: TraceKind) => ev.findIndex((e) => e.kind === k);
    expect(at('mn.release')).toBeGreaterThanOrEqual(0);
    expect(at('mn.release')).toBeLessThan(at('pte.clear'));
    expect(at('pte.clear')).toBeLessThan(at('process.exit'));
    expect(
      of(all, 'pte.clear', (e) => e.op === exitOp)
        .map((e) => e.addr)
        .sort(),
    ).toEqual([page(0), page(1)]);
    expect(freed).toBe(2);
    expect((await store.pageTable(pid)).size).toBe(0);
    expect(await store.vmas(pid)).toEqual([]);
    expect((await store.mmState(pid)).state).toBe('dead');
    expect(await store.mnSubscribers(pid)).toEqual([]);
    // the exited mm refuses every later user: a fault, a syscall, mmap_sem
    expect(
      await codeOf(rpc.call('fault', { pid, addr: page(1), access: 'read', agent: CPU })),
    ).toBe('ESRCH');
    expect(await codeOf(rpc.call('mprotect', { pid, addr: page(1), pages: 1, prot: 'r' }))).toBe(
      'ESRCH',
    );

    expect(await chaos([])).toEqual({ active: [] });
    // The madvise wakes up to an mm with no page table left: nothing to zap, nothing freed twice.
    expect(await madvise.p).toEqual({ zapped: 0, freed: 0 });
    all = await t!.settled();
    expect(one(all, 'mmap_sem.release', (e) => e.pid === pid && isOp('madvise')(e))).toMatchObject({
      mode: 'read',
      token: mAcq.token,
      released: true,
    });
    // The device cannot reach the dead mm's memory any more.
    expect(await codeOf(hca('hcaRdmaRead', { mr, addr: page(1) }))).toBe('EFAULT');
    await hca('hcaDeregMr', { mr });
    expect((await rpc.call('meminfo', {})).free).toBe(before.free);
  });

  it('exit does not wait for a munmap holding mmap_sem for write: it zaps what the munmap detached but had not zapped yet', async () => {
    const before = await rpc.call('meminfo', {});
    const { pid, page } = await space(3);
    for (let i = 0; i < 3; i++)
      await rpc.call('cpuAccess', { pid, addr: page(i), op: 'write', value: i }, { id: 0 });
    const { mr } = await hca('hcaRegMr', {
      pid,
      addr: page(0),
      pages: 3,
      odp: true,
      access: ['read', 'write'],
    });
    await hang();
    const munmap = track(rpc.call('munmap', { pid, addr: page(0), pages: 2 }));
    await hungOn(pid);
    // The munmap detached [page 0, page 2) from the VMA list and sleeps before its zap.
    expect((await store.vmas(pid)).map((v) => [v.start * PAGE_SIZE, v.end * PAGE_SIZE])).toEqual([
      [page(2), page(3)],
    ]);
    const { freed } = await rpc.call('exit', { pid });
    expect(freed).toBe(3);
    expect(munmap.done).toBe(false);
    expect((await store.pageTable(pid)).size).toBe(0);
    expect((await store.mmState(pid)).state).toBe('dead');

    expect(await chaos([])).toEqual({ active: [] });
    expect(await munmap.p).toEqual({ zapped: 0, freed: 0 });
    const all = await t!.settled();
    expect(one(all, 'mmap_sem.release', (e) => e.pid === pid && isOp('munmap')(e))).toMatchObject({
      mode: 'write',
      released: true,
    });
    await hca('hcaDeregMr', { mr });
    expect((await rpc.call('meminfo', {})).free).toBe(before.free);
  });
});
