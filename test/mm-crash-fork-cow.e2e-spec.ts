/**
 * An mm replica dying at every step of fork and of a COW fault (do_wp_page), with the crash
 * points of test/support/crash-lab.ts. A fork is rolled back (no child: its caller is told so,
 * definitely), unless the child had come alive (the caller gets its pid). A COW has no intent
 * record: the frame it allocated is pending ({mem}:pending) until installed, and the PTE it
 * cleared keeps the old page, so the next fault puts the old PTE back and a surviving replica
 * frees the frame (or, once installed, the old page). A COW stopped past its lease is undone
 * and refused when it resumes. mmlab fsck finds nothing after each.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { Store } from '@mmlab/model';
import type { RpcClient } from '@mmlab/runtime';
import type { LocalLab } from '@mmlab/runner';
import { type TraceLog, codeOf, until } from '@mmlab/testing';
import { HCA, LEASE_TTL_MS, POINTS, codeOfError, useCrashLab } from './support/crash-lab';

const FRAMES = 512; // 15 cases, most of which leave their processes

describe('an mm replica dying in fork or in a COW', () => {
  const c = useCrashLab(FRAMES);
  const { space, dieAt, afterDeath, up } = c;
  let lab: LocalLab;
  let rpc: RpcClient;
  let store: Store;
  let trace: TraceLog;
  beforeAll(() => {
    ({ lab, rpc, store, trace } = c);
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
      const r = await c.t.fsck(4 * LEASE_TTL_MS);
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
      const r = await c.t.fsck(4 * LEASE_TTL_MS);
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
    const r = await c.t.fsck(4 * LEASE_TTL_MS);
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
    await c.t.settled();
    expect(await store.pageTable(pid)).toEqual(before);
    expect(
      (await rpc.call('cpuAccess', { pid: child, addr: page(0), op: 'read' }, { id: 0 })).value,
    ).toBe(10);
    expect((await rpc.call('cpuAccess', { pid, addr: page(0), op: 'read' }, { id: 0 })).value).toBe(
      77,
    );
    const after = await c.t.fsck(4 * LEASE_TTL_MS);
    expect(after.findings.map((f) => f.message)).toEqual([]);
    // the resumed replica serves again (as a new incarnation, if it was fenced)
    for (let i = 0; i < 4; i++)
      await again(() =>
        rpc.call('cpuAccess', { pid, addr: page(1), op: 'write', value: i }, { id: 0 }),
      );
  });
});
