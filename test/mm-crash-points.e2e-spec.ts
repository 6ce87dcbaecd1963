/**
 * An mm replica dying at every step of munmap, mprotect, mremap, madvise, exit, fork and COW (a crash point
 * armed on both replicas: the first to reach it dies there with SIGKILL): the other replica
 * takes the operation over from its intent record, its caller gets EOWNERDEAD instead of waiting
 * for its RPC timeout — within one lease TTL of the death — and mmlab fsck then finds nothing —
 * no PTE outside a VMA, no leaked frame, no lease or open invalidation of the dead replica —
 * with the operation's effect complete (rolled forward), or, for fork, undone (rolled back: no
 * child) unless the child had come alive. A COW has no intent record: the frame it allocated is
 * pending ({mem}:pending) until installed, and the PTE it cleared keeps the old page, so the
 * next fault puts the old PTE back and the survivor frees the frame (or, once installed, the
 * old page). A replica that was only stopped (SIGSTOP) past its liveness lease and resumes after
 * the take-over is refused the page tables of the operation (fenced), and writes nothing.
 *
 * Real nats-server, redis-server and services: three mm replicas (lease TTL 600 ms), one CPU and
 * hca0 with an ODP MR over the range (each invalidation takes the device 100 ms).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type EventOf, MmlabError, PAGE_SIZE, type Prot, type TraceEvent } from '@mmlab/protocol';
import { type Store, crashKey } from '@mmlab/model';
import type { RpcClient } from '@mmlab/runtime';
import type { LocalLab } from '@mmlab/runner';
import { type TestLab, type TraceLog, codeOf, startTestLab, until } from '@mmlab/testing';

const LEASE_TTL_MS = 600;
const codeOfError = (e: unknown): string => (e instanceof MmlabError ? e.code : String(e));
const MMS = ['mm-0', 'mm-1', 'mm-2'];
const HCA = 'hca0';

/** Every crash point of each syscall, in the order the syscall reaches them. */
const POINTS = {
  munmap: [
    'munmap.intent',
    'munmap.vma_unmapped',
    'munmap.range_started',
    'munmap.zapped',
    'munmap.flushed',
    'munmap.freed',
    'munmap.range_ended',
  ],
  mprotect: [
    'mprotect.intent',
    'mprotect.vma_protected',
    'mprotect.range_started',
    'mprotect.changed',
    'mprotect.range_ended',
  ],
  // a shrink: the tail is zapped (munmap's steps) before the VMA moves
  mremap: [
    'mremap.intent',
    'mremap.range_started',
    'mremap.zapped',
    'mremap.flushed',
    'mremap.freed',
    'mremap.vma_moved',
    'mremap.move_started',
    'mremap.moved',
    'mremap.range_ended',
  ],
  madvise: [
    'madvise.intent',
    'madvise.range_started',
    'madvise.zapped',
    'madvise.flushed',
    'madvise.freed',
  ],
  exit: ['exit.intent', 'exit.begun', 'exit.released', 'exit.zapped', 'exit.freed', 'exit.ended'],
  fork: [
    'fork.intent',
    'fork.child_created',
    'fork.range_started',
    'fork.copied',
    'fork.referenced',
    'fork.child_set',
    'fork.range_ended',
    'fork.child_alive',
  ],
  // do_wp_page's copy of a page shared with a child
  cow: [
    'do_wp_page.copied',
    'do_wp_page.range_started',
    'do_wp_page.ptl_held',
    'do_wp_page.set',
    'do_wp_page.range_ended',
    'do_wp_page.freed',
  ],
} as const;

describe('an mm replica dying at each step of a multi-step change', () => {
  let t: TestLab | undefined;
  let lab: LocalLab;
  let rpc: RpcClient;
  let store: Store;
  let trace: TraceLog;
  /** how long each caller waited for its answer after the death (ms), by point */
  const answeredAfter: Record<string, number> = {};

  beforeAll(async () => {
    t = await startTestLab(
      {
        mode: 'patched',
        frames: 1024, // 49 cases, most of which leave their processes
        cpus: 1,
        mmReplicas: 3,
        leaseTtlMs: LEASE_TTL_MS,
        observer: false,
        subscribers: [{ name: HCA, kind: 'hca', invalidateLatencyMs: 100 }],
      },
      { rpcTimeoutMs: 20_000 },
    );
    ({ lab, rpc, store, trace } = t);
  });
  afterAll(async () => {
    await restarting.catch(() => undefined);
    console.log(`caller answered after the death (ms): ${JSON.stringify(answeredAfter)}`);
    await t?.stop();
  });

  /** 4 pages written by cpu0 (values 10..13) and mapped by hca0 through an ODP MR. */
  async function space() {
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 4, prot: 'rw' });
    const page = (i: number) => addr + i * PAGE_SIZE;
    for (let i = 0; i < 4; i++)
      await rpc.call('cpuAccess', { pid, addr: page(i), op: 'write', value: 10 + i }, { id: 0 });
    const { mr } = await rpc.call(
      'hcaRegMr',
      { pid, addr, pages: 4, odp: true, access: ['read', 'write'] },
      { id: HCA },
    );
    for (let i = 0; i < 4; i++) await rpc.call('hcaRdmaRead', { mr, addr: page(i) }, { id: HCA });
    return { pid, addr, page, mr };
  }

  /**
   * The replicas serving (not dead, not being restarted). A dead one is restarted while the next
   * cases run on the other two (a replica's start is the slowest part of a case).
   */
  const up = new Set(MMS);
  let restarting: Promise<void> = Promise.resolve();

  let n = 0;
  /** Arm point on the replicas up (one fires), run call; → its outcome and who died when. */
  async function dieAt<T>(point: string, call: () => Promise<T>, action: 'kill' | 'stop' = 'kill') {
    if (up.size < 2) await restarting;
    const armed = [...up];
    const token = `${point}#${++n}`;
    for (const m of armed) await rpc.call('mmCrashPoint', { point, token, action }, { id: m });
    const outcome = await call().then(
      (value) => ({ value, code: null as string | null, at: Date.now() }),
      async (e: unknown) => ({
        value: null,
        code: codeOfError(e),
        at: Date.now(),
      }),
    );
    const fired = await store.redis.get(crashKey(token));
    expect(fired, `crash point ${point} was reached`).not.toBeNull();
    const [dead, when] = fired!.split('|');
    up.delete(dead);
    for (const m of armed)
      if (m !== dead) await rpc.call('mmCrashPoint', { point: '', token, action }, { id: m });
    return { outcome, dead, diedAt: Number(when) };
  }

  /** After the take-over: nothing for fsck to find; then the dead replica comes back. */
  async function afterDeath(
    point: string,
    d: { dead: string; diedAt: number; outcome: { at: number } },
  ) {
    answeredAfter[point] = d.outcome.at - d.diedAt;
    // the dead replica comes back (a new incarnation) while the next cases run
    restarting = restarting.then(async () => {
      await lab.start(d.dead);
      up.add(d.dead);
    });
    // EOWNERDEAD is sent when the taker starts: wait for it to finish (no intent left) before
    // looking at the effect
    await until(
      async () =>
        (await Promise.all((await store.processes()).map((p) => store.intents(p)))).every(
          (i) => i.length === 0,
        ),
      'the operation taken over finished',
    );
    const r = await t!.fsck(4 * LEASE_TTL_MS);
    expect(r.findings.map((f) => `${f.code} ${f.message}`)).toEqual([]);
  }

  for (const point of POINTS.munmap)
    it(`munmap, killed at ${point}: rolled forward, the caller told EOWNERDEAD`, async () => {
      const { pid, page } = await space();
      const d = await dieAt(point, () => rpc.call('munmap', { pid, addr: page(1), pages: 2 }));
      expect(d.outcome.code).toBe('EOWNERDEAD');
      await afterDeath(point, d);
      // the range is gone for every agent; the rest is intact
      for (const i of [1, 2])
        expect(
          await codeOf(rpc.call('cpuAccess', { pid, addr: page(i), op: 'read' }, { id: 0 })),
        ).toBe('SIGSEGV');
      for (const i of [0, 3])
        expect(
          (await rpc.call('cpuAccess', { pid, addr: page(i), op: 'read' }, { id: 0 })).value,
        ).toBe(10 + i);
      expect([...(await store.pageTable(pid)).keys()].sort()).toEqual([
        page(0) / PAGE_SIZE,
        page(3) / PAGE_SIZE,
      ]);
    });

  it('the munmap caller is answered within one lease TTL of the death', () => {
    // Measured by the munmap cases above (they run first): liveness lives 3/4 of the TTL and
    // intent owners are polled every tenth of it, so the design bound is ~0.85 TTL.
    const waits = POINTS.munmap.map((p) => answeredAfter[p]);
    expect(waits.every((w) => typeof w === 'number')).toBe(true);
    expect(Math.max(...waits)).toBeLessThan(LEASE_TTL_MS);
  });

  for (const point of POINTS.mprotect)
    it(`mprotect, killed at ${point}: rolled forward`, async () => {
      const { pid, page } = await space();
      const prot: Prot = 'r';
      const d = await dieAt(point, () =>
        rpc.call('mprotect', { pid, addr: page(0), pages: 3, prot }),
      );
      expect(d.outcome.code).toBe('EOWNERDEAD');
      await afterDeath(point, d);
      for (const i of [0, 1, 2])
        expect(
          await codeOf(
            rpc.call('cpuAccess', { pid, addr: page(i), op: 'write', value: 1 }, { id: 0 }),
          ),
        ).toBe('SIGSEGV');
      expect(
        (await rpc.call('cpuAccess', { pid, addr: page(3), op: 'write', value: 7 }, { id: 0 }))
          .value,
      ).toBe(7);
    });

  for (const point of POINTS.mremap)
    it(`mremap (shrink), killed at ${point}: rolled forward`, async () => {
      const { pid, addr, page } = await space();
      const d = await dieAt(point, () => rpc.call('mremap', { pid, addr, pages: 4, newPages: 2 }));
      expect(d.outcome.code).toBe('EOWNERDEAD');
      await afterDeath(point, d);
      // the old range is gone; the first two pages live at the new place with their data
      expect(
        await codeOf(rpc.call('cpuAccess', { pid, addr: page(0), op: 'read' }, { id: 0 })),
      ).toBe('SIGSEGV');
      const vmas = await store.vmas(pid);
      expect(vmas).toHaveLength(1);
      expect(vmas[0].end - vmas[0].start).toBe(2);
      const to = vmas[0].start * PAGE_SIZE;
      for (const i of [0, 1])
        expect(
          (await rpc.call('cpuAccess', { pid, addr: to + i * PAGE_SIZE, op: 'read' }, { id: 0 }))
            .value,
        ).toBe(10 + i);
    });

  for (const point of POINTS.madvise)
    it(`madvise(DONTNEED), killed at ${point}: rolled forward`, async () => {
      const { pid, page } = await space();
      const d = await dieAt(point, () =>
        rpc.call('madvise', { pid, addr: page(1), pages: 2, advice: 'dontneed' }),
      );
      expect(d.outcome.code).toBe('EOWNERDEAD');
      await afterDeath(point, d);
      // the pages are dropped (the next touch reads zero), the VMA stays; the rest is intact
      for (const i of [0, 1, 2, 3])
        expect(
          (await rpc.call('cpuAccess', { pid, addr: page(i), op: 'read' }, { id: 0 })).value,
        ).toBe(i === 1 || i === 2 ? 0 : 10 + i);
    });

  for (const point of POINTS.exit)
    it(`exit, killed at ${point}: rolled forward (the mm ends, its frames go back)`, async () => {
      const { pid, page } = await space();
      const d = await dieAt(point, () => rpc.call('exit', { pid }));
      expect(d.outcome.code).toBe('EOWNERDEAD');
      await afterDeath(point, d);
      expect((await store.mmState(pid)).state).toBe('dead');
      expect((await store.pageTable(pid)).size).toBe(0);
      expect(await store.vmas(pid)).toEqual([]);
      expect(
        await codeOf(rpc.call('cpuAccess', { pid, addr: page(0), op: 'read' }, { id: 0 })),
      ).toBe('ESRCH');
    });

  for (const point of POINTS.fork)
    it(`fork, killed at ${point}: rolled back (no child), or the child's pid if it was alive`, async () => {
      const { pid, page, mr } = await space();
      const before = await store.processes();
      const d = await dieAt(point, () => rpc.call('fork', { pid }));
      await afterDeath(point, d);
      const alive = point === 'fork.child_alive';
      if (alive) {
        expect(d.outcome.code).toBeNull();
        const { pid: child } = d.outcome.value as { pid: number };
        for (let i = 0; i < 4; i++)
          expect(
            (await rpc.call('cpuAccess', { pid: child, addr: page(i), op: 'read' }, { id: 0 }))
              .value,
          ).toBe(10 + i);
      } else {
        expect(d.outcome.code).toBe('EOWNERDEAD');
        // the child it began, if any, is a tombstone: no VMA, no PTE, ESRCH to everyone
        for (const c of (await store.processes()).filter((p) => !before.includes(p))) {
          expect((await store.mmState(c)).state).toBe('dead');
          expect(await store.vmas(c)).toEqual([]);
          expect((await store.pageTable(c)).size).toBe(0);
          expect(
            await codeOf(rpc.call('cpuAccess', { pid: c, addr: page(0), op: 'read' }, { id: 0 })),
          ).toBe('ESRCH');
        }
      }
      // the parent goes on: its data, and writes that land in its own pages
      for (let i = 0; i < 4; i++) {
        await rpc.call('cpuAccess', { pid, addr: page(i), op: 'write', value: 20 + i }, { id: 0 });
        expect((await rpc.call('hcaRdmaRead', { mr, addr: page(i) }, { id: HCA })).value).toBe(
          20 + i,
        );
      }
      const r = await t!.fsck(4 * LEASE_TTL_MS);
      expect(r.findings.map((f) => `${f.code} ${f.message}`)).toEqual([]);
    });

  for (const point of POINTS.cow)
    it(`COW, killed at ${point}: the old page comes back or the new one stays, nothing leaks`, async () => {
      const { pid, page } = await space();
      const { pid: child } = await rpc.call('fork', { pid });
      // The fault is asked for by this test, as cpu0 would (a dead replica never answers it).
      const d = await dieAt(point, () =>
        rpc.call(
          'fault',
          { pid, addr: page(0), access: 'write', agent: 'cpu0' },
          { timeoutMs: 1500 },
        ),
      );
      expect(d.outcome.code).toBe('ETIMEDOUT');
      await afterDeath(point, d);
      // the parent's page is its own again, written; the child keeps the old data
      expect(
        (await rpc.call('cpuAccess', { pid, addr: page(0), op: 'write', value: 99 }, { id: 0 }))
          .value,
      ).toBe(99);
      expect(
        (await rpc.call('cpuAccess', { pid: child, addr: page(0), op: 'read' }, { id: 0 })).value,
      ).toBe(10);
      expect(
        (await rpc.call('cpuAccess', { pid, addr: page(0), op: 'read' }, { id: 0 })).value,
      ).toBe(99);
      expect(await store.pendingFrames()).toEqual([]);
      const r = await t!.fsck(4 * LEASE_TTL_MS);
      expect(r.findings.map((f) => `${f.code} ${f.message}`)).toEqual([]);
    });

  it('a COW stopped under its PT lock past its lease is undone, and refused when it resumes', async () => {
    const { pid, page } = await space();
    const { pid: child } = await rpc.call('fork', { pid });
    const d = await dieAt(
      'do_wp_page.ptl_held',
      () =>
        rpc.call(
          'fault',
          { pid, addr: page(0), access: 'write', agent: 'cpu0' },
          { timeoutMs: 1500 },
        ),
      'stop',
    );
    expect(d.outcome.code).toBe('ETIMEDOUT');
    // its frame is reaped (fencing it off pid), the next fault undoes its cleared PTE
    const r = await t!.fsck(4 * LEASE_TTL_MS);
    expect(r.findings.map((f) => f.message)).toEqual([]);
    await until(
      async () => (await store.pendingFrames()).length === 0,
      'the stopped replica’s pending frame reaped',
    );
    const again = async <T>(call: () => Promise<T>): Promise<T> => {
      for (let i = 0; ; i++) {
        try {
          return await call();
        } catch (e) {
          if (i > 10 || !['ETIMEDOUT', 'ESTALE'].includes(codeOfError(e))) throw e;
        }
      }
    };
    await again(() =>
      rpc.call(
        'cpuAccess',
        { pid, addr: page(0), op: 'write', value: 77 },
        { id: 0, timeoutMs: 8000 },
      ),
    );
    const before = await store.pageTable(pid);
    const resumed = trace.events.length;
    lab.signal(d.dead, 'SIGCONT');
    up.add(d.dead); // resumed: it serves again (as a new incarnation once it finds itself fenced)
    // Its next step, set_pte_at, is refused (lease lost; its incarnation fenced off pid).
    await until(
      () =>
        trace.events
          .slice(resumed)
          .some((e) => e.kind === 'pte.reject' && e.instance === d.dead && e.pid === pid),
      'the resumed COW refused',
    );
    await t!.settled();
    expect(await store.pageTable(pid)).toEqual(before);
    expect(
      (await rpc.call('cpuAccess', { pid: child, addr: page(0), op: 'read' }, { id: 0 })).value,
    ).toBe(10);
    expect((await rpc.call('cpuAccess', { pid, addr: page(0), op: 'read' }, { id: 0 })).value).toBe(
      77,
    );
    const after = await t!.fsck(4 * LEASE_TTL_MS);
    expect(after.findings.map((f) => f.message)).toEqual([]);
    // the resumed replica serves again (as a new incarnation, if it was fenced)
    for (let i = 0; i < 4; i++)
      await again(() =>
        rpc.call('cpuAccess', { pid, addr: page(1), op: 'write', value: i }, { id: 0 }),
      );
  });

  it('a replica stopped past its lease is fenced: the take-over wins, its later writes are refused', async () => {
    const { pid, page } = await space();
    // Stopped after mprotect(r)'s range start, before any PTE changed.
    const d = await dieAt(
      'mprotect.range_started',
      () => rpc.call('mprotect', { pid, addr: page(0), pages: 2, prot: 'r' }),
      'stop',
    );
    expect(d.outcome.code).toBe('EOWNERDEAD');
    const r = await t!.fsck(4 * LEASE_TTL_MS);
    expect(r.findings.map((f) => f.message)).toEqual([]);
    // The survivor finished the mprotect; the program goes on: writable again, and written.
    // (A request the queue group gives the stopped replica is not answered: sent again.)
    const again = async <T>(call: () => Promise<T>): Promise<T> => {
      for (let i = 0; ; i++) {
        try {
          return await call();
        } catch (e) {
          if (i > 10 || codeOfError(e) !== 'ETIMEDOUT') throw e;
        }
      }
    };
    await again(() =>
      rpc.call('mprotect', { pid, addr: page(0), pages: 2, prot: 'rw' }, { timeoutMs: 1500 }),
    );
    await again(() =>
      rpc.call(
        'cpuAccess',
        { pid, addr: page(0), op: 'write', value: 42 },
        { id: 0, timeoutMs: 8000 },
      ),
    );
    const before = await store.pageTable(pid);
    expect(before.get(page(0) / PAGE_SIZE)?.writable).toBe(true);
    // SIGCONT: the stopped replica goes on with its old mprotect(r), and is refused its PT locks
    // (unfenced, it would write-protect page 0 again under a writable VMA, long after the fact).
    const resumed = trace.events.length;
    lab.signal(d.dead, 'SIGCONT');
    up.add(d.dead); // resumed: it serves again (as a new incarnation once it finds itself fenced)
    // Its next step: a PT lock taken (unfenced), or refused (fenced).
    let next: TraceEvent | undefined;
    await until(
      () =>
        (next = trace.events
          .slice(resumed)
          .find(
            (e) =>
              (e.kind === 'pte.reject' || e.kind === 'ptl.acquire') &&
              e.instance === d.dead &&
              e.pid === pid,
          )) !== undefined,
      'the resumed replica going on with its mprotect',
    );
    await t!.settled();
    expect(await store.pageTable(pid)).toEqual(before);
    expect(next).toMatchObject({ kind: 'pte.reject' });
    // (by the survivor, which has finished it and forgotten the record by now)
    expect((next as EventOf<'pte.reject'>).reason).toMatch(
      new RegExp(`taken over (by mm-\\d\\.|and finished by another replica): incarnation fenced`),
    );
    expect(
      (await rpc.call('cpuAccess', { pid, addr: page(0), op: 'write', value: 43 }, { id: 0 }))
        .value,
    ).toBe(43);
    const after = await t!.fsck(4 * LEASE_TTL_MS);
    expect(after.findings.map((f) => f.message)).toEqual([]);
  });
});
