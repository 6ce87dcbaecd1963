/**
 * KSM (mm/ksm.c): examples/seed/write_protect_page.yaml — write_protect_page and replace_page
 * across an ODP HCA's process and a KVM guest's — in both eras, and ksmd on a lab of its own:
 * a pinned page is never merged, a later pass merges into the KSM page of an earlier one, a
 * write un-merges (do_wp_page copies a KSM page), and the KSM page is freed with its last
 * mapping.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type EventOf, PAGE_SIZE, type TraceEvent } from '@mmlab/protocol';
import { ksmStableTree } from '@mmlab/model';
import type { RpcClient } from '@mmlab/runtime';
import {
  LEGACY_TWIN_OK,
  type TestLab,
  outcomeOf,
  runLegacyTwin,
  runScenario,
  startTestLab,
} from '@mmlab/testing';

const tmp = mkdtempSync(path.join(tmpdir(), 'mmlab-ksm-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const EXAMPLE = 'examples/seed/write_protect_page.yaml';
const ksmdOp = (evs: TraceEvent[]): string => evs.find((e) => e.kind === 'ksm.merge')!.op!;
/** callbacks mm sent for op, as "subscriber callback" */
const sent = (evs: TraceEvent[], op: string): string[] =>
  evs
    .filter((e): e is EventOf<'mn.send'> => e.kind === 'mn.send' && e.op === op)
    .map((e) => `${e.subscriber} ${e.callback}`);

describe(`${EXAMPLE}: KSM merges a page an ODP MR maps with one a KVM guest maps`, () => {
  it('v3.7: valid; KVM change_pte finds its sPTE already zapped; the HCA gets only start/end', async () => {
    const run = await runScenario(EXAMPLE, 'ksm-patched', tmp);
    expect(outcomeOf(run), run.log).toEqual({ ...LEGACY_TWIN_OK, broken: [] });
    const { events, results } = run;
    const merges = events.filter((e): e is EventOf<'ksm.merge'> => e.kind === 'ksm.merge');
    // the VMM's page became the KSM page, p's was replaced by it
    expect(merges.map((e) => [e.pid, e.result])).toEqual([
      [2, 'stable'],
      [1, 'merged'],
    ]);
    expect(merges[1].kpfn).toBe(merges[0].pfn);
    const op = ksmdOp(events);
    const calls = sent(events, op);
    // 6bdb913f: every set_pte_at_notify inside a range; the HCA has no change_pte
    expect(calls.filter((c) => c.startsWith('hca0'))).toEqual([
      'hca0 invalidate_range_start',
      'hca0 invalidate_range_end',
      'hca0 invalidate_range_start',
      'hca0 invalidate_range_end',
    ]);
    expect(calls).toContain('kvm0 change_pte');
    const cp = events.filter(
      (e): e is EventOf<'kvm.change_pte'> => e.kind === 'kvm.change_pte' && e.op !== undefined,
    );
    expect(cp.length).toBeGreaterThan(0);
    expect(cp.every((e) => !e.found)).toBe(true);
    expect(results.metrics.changePte).toEqual({ count: cp.length, noSpte: cp.length });
    // no callback but change_pte was sent with a PT lock held
    expect(events.some((e) => e.kind === 'might_sleep')).toBe(false);
  });

  it('v3.6: exactly no-sleep-under-ptlock, from the HCA fallback invalidate_page', async () => {
    const run = await runLegacyTwin(EXAMPLE, 'ksm-legacy', tmp);
    expect(outcomeOf(run), run.log).toEqual(LEGACY_TWIN_OK);
    const { events } = run;
    const op = ksmdOp(events);
    expect(sent(events, op).filter((c) => c.startsWith('hca0'))).toEqual([
      'hca0 invalidate_page',
      'hca0 invalidate_page',
    ]);
    const ms = events.filter((e): e is EventOf<'might_sleep'> => e.kind === 'might_sleep');
    expect(ms.map((e) => [e.op, e.callback])).toEqual([
      [op, 'invalidate_page'],
      [op, 'invalidate_page'],
    ]);
    // v3.6: no range start, so KVM's change_pte still finds its sPTE and switches it
    const ksmCp = events.filter(
      (e): e is EventOf<'kvm.change_pte'> => e.kind === 'kvm.change_pte' && !e.writable,
    );
    expect(ksmCp.map((e) => e.found)).toEqual([true]);
  });
});

describe('ksmd on a lab of its own (v3.7)', () => {
  let t: TestLab | undefined;
  let rpc: RpcClient;
  beforeAll(async () => {
    t = await startTestLab(
      { mode: 'patched', frames: 32, cpus: 1, mmReplicas: 2, subscribers: [] },
      { rpcTimeoutMs: 20_000 },
    );
    ({ rpc } = t);
  });
  afterAll(async () => {
    await t?.stop();
  });
  const write = (pid: number, addr: number, value: number) =>
    rpc.call('cpuAccess', { pid, addr, op: 'write', value }, { id: 0 });
  const read = async (pid: number, addr: number) =>
    (await rpc.call('cpuAccess', { pid, addr, op: 'read' }, { id: 0 })).value;
  const pfnAt = async (pid: number, addr: number) =>
    (await t!.store.pageTable(pid)).get(addr / PAGE_SIZE);

  it('a pinned page is refused (write_protect_page counts), an unpinned one merged; a later pass merges into the stable page; writes un-merge', async () => {
    const { pid: a } = await rpc.call('processCreate', {});
    const { pid: b } = await rpc.call('processCreate', {});
    const { addr: ba } = await rpc.call('mmap', { pid: a, pages: 3, prot: 'rw' });
    const { addr: bb } = await rpc.call('mmap', { pid: b, pages: 2, prot: 'rw' });
    for (const [pid, addr] of [
      [a, ba],
      [a, ba + PAGE_SIZE],
      [b, bb],
    ])
      await write(pid, addr, 5);
    await write(a, ba + 2 * PAGE_SIZE, 6);
    // a's page 1 pinned (a pinned MR's page): extra reference
    const pin = await rpc.call('gup', {
      pid: a,
      addr: ba + PAGE_SIZE,
      pages: 1,
      write: true,
      pin: true,
      agent: 'dev0',
    });
    const r1 = await rpc.call('ksmMerge', {
      ranges: [
        { pid: a, addr: ba, pages: 3 },
        { pid: b, addr: bb, pages: 1 },
      ],
    });
    expect(r1).toMatchObject({ scanned: 4, stable: 1, merged: 2 });
    expect(r1.refused).toEqual([{ pid: a, addr: ba + PAGE_SIZE, reason: 'pinned' }]);
    const k = await pfnAt(a, ba);
    expect(k?.writable).toBe(false);
    expect(await pfnAt(b, bb)).toEqual(k);
    expect((await pfnAt(a, ba + PAGE_SIZE))?.writable).toBe(true); // the pinned one, as it was
    const evs = await t!.settled();
    const refused = evs.find(
      (e): e is EventOf<'ksm.merge'> => e.kind === 'ksm.merge' && e.result === 'refused',
    );
    expect(refused).toMatchObject({ reason: 'pinned', mapcount: 1, refcount: 2 });
    await rpc.call('unpin', { pid: a, pages: pin.pages, agent: 'dev0' });

    // a second pass: b's page 1 gets the same content and merges into the stable page
    await write(b, bb + PAGE_SIZE, 5);
    const r2 = await rpc.call('ksmMerge', { ranges: [{ pid: b, addr: bb + PAGE_SIZE, pages: 1 }] });
    expect(r2).toMatchObject({ scanned: 1, stable: 0, merged: 1, refused: [] });
    expect(await pfnAt(b, bb + PAGE_SIZE)).toEqual(k);
    const frames = await t!.store.frames();
    expect(frames.get(k!.pfn)).toMatchObject({ map: 3, ref: 3, data: 5 });

    // writes: do_wp_page copies the KSM page (never reused, even when mapped once at the end)
    await write(a, ba, 8);
    await write(b, bb, 9);
    expect(await read(a, ba)).toBe(8);
    expect(await read(b, bb)).toBe(9);
    expect(await read(b, bb + PAGE_SIZE)).toBe(5);
    expect((await t!.store.frames()).get(k!.pfn)).toMatchObject({ map: 1, ref: 1 });
    await write(b, bb + PAGE_SIZE, 10);
    expect((await pfnAt(b, bb + PAGE_SIZE))?.pfn).not.toBe(k!.pfn);
    expect(await read(b, bb + PAGE_SIZE)).toBe(10);
    // the last mapping gone: the KSM page is freed and out of the stable tree
    expect((await t!.store.frames()).get(k!.pfn)?.state).toBe('free');
    expect(await ksmStableTree(t!.store)).toEqual({});
    const fsck = await t!.fsck();
    expect(fsck.findings).toEqual([]);
  });
});
