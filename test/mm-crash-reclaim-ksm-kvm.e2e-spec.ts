/**
 * Issue 15: an mm replica dying at every step of reclaim (shrink_page_list, try_to_unmap_one),
 * of a swap-in (do_swap_page) and of a ksmd pass (write_protect_page, replace_page, the merge of
 * two pages), and a KVM instance dying at every step of its guest fault (tdp_page_fault: gup,
 * mmu_notifier_retry, the sPTE install) — with the crash points of test/support/crash-lab.ts, one
 * lab for the file (swap, hca0 with an ODP MR over each case's pages, kvm0). None of these has an
 * intent record: the caller gets no answer (its RPC times out), and what the dead replica left is
 * the survivors' to finish or undo. Each case ends with mmlab fsck clean and every page of the
 * case's process reading its data back, from the CPU and the HCA.
 *
 * Also here: the count of crash points (every point of POINTS is in the code, every point in the
 * code is in POINTS, and how many of them the crash-point files test).
 */
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@mmlab/protocol';
import { codeOf, until } from '@mmlab/testing';
import { repoRoot } from '@mmlab/runner';
import {
  ALL_POINTS,
  HCA,
  KNOWN_LEAKS,
  LEASE_TTL_MS,
  POINTS,
  crashPointsInCode,
  useCrashLab,
} from './support/crash-lab';

const FRAMES = 128; // each case exits its process
const KVM = 'kvm0';
/** The caller of an operation with no intent record: no answer from a dead replica. */
const NO_ANSWER_MS = 1500;

describe('an mm replica dying in reclaim, swap-in or KSM; KVM dying in its fault', () => {
  const c = useCrashLab(FRAMES, {
    swapSlots: 64,
    subscribers: [
      { name: HCA, kind: 'hca', invalidateLatencyMs: 20 },
      { name: KVM, kind: 'kvm' },
    ],
  });
  const { space, dieAt, afterDeath } = c;

  /** Every page of the case's space reads its value back (CPU and HCA), then the process exits. */
  async function intact(
    s: { pid: number; page: (i: number) => number; mr: number },
    values: number[],
  ) {
    for (let i = 0; i < 4; i++) {
      expect(
        (await c.rpc.call('cpuAccess', { pid: s.pid, addr: s.page(i), op: 'read' }, { id: 0 }))
          .value,
      ).toBe(values[i]);
      expect(
        (await c.rpc.call('hcaRdmaRead', { mr: s.mr, addr: s.page(i) }, { id: HCA })).value,
      ).toBe(values[i]);
    }
  }
  async function done(pid: number) {
    await c.rpc.call('exit', { pid });
    const r = await c.t.fsck(4 * LEASE_TTL_MS);
    expect(r.findings.map((f) => `${f.code} ${f.message}`)).toEqual([]);
  }

  it('every crash point of the code is in the tables, and every one of the tables is in the code', () => {
    const code = crashPointsInCode(repoRoot());
    const suffixes = code.templated.map((t) => t.slice(1));
    const inCode = (p: string) => code.literal.includes(p) || suffixes.some((s) => p.endsWith(s));
    expect(ALL_POINTS.filter((p) => !inCode(p))).toEqual([]);
    expect(code.literal.filter((p) => !ALL_POINTS.includes(p))).toEqual([]);
    for (const s of suffixes) expect(ALL_POINTS.some((p) => p.endsWith(s))).toBe(true);
    const untested = Object.keys(KNOWN_LEAKS);
    console.log(
      `crash points: ${ALL_POINTS.length} in the tables, ${ALL_POINTS.length - untested.length} tested; ` +
        `not tested: ${untested.join(', ') || 'none'}`,
    );
  });

  for (const point of POINTS.reclaim)
    it.skipIf(point in KNOWN_LEAKS)(
      `reclaim, killed at ${point}: the pages stay or go to swap whole, nothing leaks`,
      async () => {
        const s = await space();
        const d = await dieAt(point, () =>
          c.rpc.call('reclaim', { pages: 4 }, { timeoutMs: NO_ANSWER_MS }),
        );
        expect(d.outcome.code).toBe('ETIMEDOUT');
        await afterDeath(point, d);
        await intact(s, [10, 11, 12, 13]);
        await done(s.pid);
      },
    );

  it('reclaim, killed at try_to_unmap_one.cleared, its page read back before the take-over: unmapped once, swapped in once, nothing leaks', async () => {
    const s = await space();
    const point = 'try_to_unmap_one.cleared';
    // the swap PTE the dead one set is read back as soon as it is there (a fault, not cpu0's
    // TLB, which the dead one never flushed: do_swap_page once its PT lock's lease is gone),
    // before its record is reaped: the reaper must still see the unmap as done
    const d = await dieAt(point, async () => {
      const r = c.rpc.call('reclaim', { pages: 4 }, { timeoutMs: NO_ANSWER_MS });
      // handled now: on a loaded machine it may time out before the steps below are done (an
      // unhandled rejection in a clean-clone run); dieAt still gets its ETIMEDOUT
      r.catch(() => undefined);
      const swapped = async () =>
        [...(await c.store.pageTable(s.pid)).values()].findIndex((p) => p.swap);
      await until(async () => (await swapped()) >= 0, 'a PTE made a swap entry');
      const i = await swapped();
      await c.rpc.call('fault', { pid: s.pid, addr: s.page(i), access: 'read', agent: 'cpu0' });
      expect((await c.store.pendingAndReserve()).unmapping).toHaveLength(1); // not reaped yet
      return r;
    });
    expect(d.outcome.code).toBe('ETIMEDOUT');
    await afterDeath(`${point}+swapin`, d);
    await intact(s, [10, 11, 12, 13]);
    await done(s.pid);
  });

  for (const point of POINTS.swapin)
    it(`swap-in, killed at ${point}: the page comes in once, nothing leaks`, async () => {
      const s = await space();
      await c.rpc.call('reclaim', { pages: 64 });
      expect((await c.store.pageTable(s.pid)).get(s.page(0) / PAGE_SIZE)?.swap).toBe(true);
      const d = await dieAt(point, () =>
        c.rpc.call(
          'fault',
          { pid: s.pid, addr: s.page(0), access: 'read', agent: 'cpu0' },
          { timeoutMs: NO_ANSWER_MS },
        ),
      );
      expect(d.outcome.code).toBe('ETIMEDOUT');
      await afterDeath(point, d);
      await intact(s, [10, 11, 12, 13]);
      await done(s.pid);
    });

  for (const point of POINTS.ksm)
    it(`ksmd, killed at ${point}: each page merged or not, read-only or its own, nothing leaks`, async () => {
      const s = await space();
      for (let i = 0; i < 4; i++)
        await c.rpc.call(
          'cpuAccess',
          { pid: s.pid, addr: s.page(i), op: 'write', value: 7 },
          { id: 0 },
        );
      const d = await dieAt(point, () =>
        c.rpc.call(
          'ksmMerge',
          { ranges: [{ pid: s.pid, addr: s.page(0), pages: 4 }] },
          { timeoutMs: NO_ANSWER_MS },
        ),
      );
      expect(d.outcome.code).toBe('ETIMEDOUT');
      await afterDeath(point, d);
      await intact(s, [7, 7, 7, 7]);
      // a write lands in its own page only (a merged one is copied: do_wp_page)
      await c.rpc.call(
        'cpuAccess',
        { pid: s.pid, addr: s.page(1), op: 'write', value: 99 },
        { id: 0 },
      );
      await intact(s, [7, 99, 7, 7]);
      await done(s.pid);
    });

  for (const point of POINTS.kvm)
    it(`KVM, killed at ${point}: its registration goes with its lease, nothing is pinned, a new instance serves`, async () => {
      await c.lab.restart(KVM, { MMLAB_KVM_CRASH_POINT: point });
      const s = await space();
      const { vm } = await c.rpc.call(
        'kvmCreateVm',
        { pid: s.pid, memslots: [{ gfn: 0, pages: 4, addr: s.page(0) }], vcpus: 1 },
        { id: KVM },
      );
      const code = await codeOf(
        c.rpc.call(
          'kvmGuestWrite',
          { vm, vcpu: 0, gfn: 1, value: 55 },
          { id: KVM, timeoutMs: NO_ANSWER_MS },
        ),
      );
      expect(code).toBe('ETIMEDOUT');
      // dead: the guest's store never happened; mm's next invalidation of the range finds
      // kvm0's liveness lease gone, and unregisters and fences it
      await until(() => !c.lab.runningInstances().includes(KVM), `${KVM} dead`);
      await c.rpc.call('munmap', { pid: s.pid, addr: s.page(2), pages: 2 });
      const r = await c.t.fsck(4 * LEASE_TTL_MS);
      expect(r.findings.map((f) => `${f.code} ${f.message}`)).toEqual([]);
      for (const i of [0, 1])
        expect(
          (await c.rpc.call('cpuAccess', { pid: s.pid, addr: s.page(i), op: 'read' }, { id: 0 }))
            .value,
        ).toBe(10 + i);
      // restarted (no crash point): a VM of a new process faults in and writes
      await c.lab.restart(KVM, { MMLAB_KVM_CRASH_POINT: '' });
      const t = await space();
      const { vm: vm2 } = await c.rpc.call(
        'kvmCreateVm',
        { pid: t.pid, memslots: [{ gfn: 0, pages: 4, addr: t.page(0) }], vcpus: 1 },
        { id: KVM },
      );
      await c.rpc.call('kvmGuestWrite', { vm: vm2, vcpu: 0, gfn: 1, value: 55 }, { id: KVM });
      expect(
        (await c.rpc.call('cpuAccess', { pid: t.pid, addr: t.page(1), op: 'read' }, { id: 0 }))
          .value,
      ).toBe(55);
      await c.rpc.call('kvmDestroyVm', { vm: vm2 }, { id: KVM });
      await c.rpc.call('exit', { pid: s.pid });
      await done(t.pid);
    });
});
