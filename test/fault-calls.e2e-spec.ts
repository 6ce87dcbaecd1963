/**
 * One round trip where the kernel has one step: the Redis calls an mm replica makes for one
 * fault, counted by MONITOR on the lab's Redis (never timed). A write fault on an untouched page
 * takes its frame from the replica's batch (per_cpu_pages, apps/mm/src/kernel/page_alloc.ts) and
 * is one fault script once the batch is filled; a read fault of an untouched page maps the zero
 * page, one fault script too. The first write fault of the replica fills the batch
 * (rmqueueBulk) and indexes the pid for the reaper (invIndex, once per replica and pid).
 *
 * Counted: the commands of the mm replica's connection (named after it: CLIENT LIST), but for
 * the ones its timers send whatever the faults do (the liveness lease's SET {mm}:live:<it> and
 * the reaper's reads of {mm}:* and {mem}:pending).
 *
 * Real nats-server, redis-server and services: one mm replica, one CPU, 1024 frames.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@mmlab/protocol';
import { RedisMonitor, type TestLab, startTestLab } from '@mmlab/testing';

describe('the Redis calls of one fault, per fault kind (MONITOR)', () => {
  let t: TestLab | undefined;
  let mon: RedisMonitor | undefined;

  beforeAll(async () => {
    t = await startTestLab(
      { mode: 'patched', frames: 1024, cpus: 1, mmReplicas: 1, observer: false },
      { rpcTimeoutMs: 20_000 },
    );
    mon = await RedisMonitor.start(t.lab.redisUrl);
  });
  afterAll(async () => {
    mon?.stop();
    await t?.stop();
  });

  const mmCalls = (run: () => Promise<unknown>) => mon!.mmCalls(run);

  it('a write fault on an untouched page is one fault script once the batch is filled; a read of the zero page one', async () => {
    const { rpc } = t!;
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 16, prot: 'rw' });
    const store = (i: number) =>
      rpc.call('cpuAccess', { pid, addr: addr + i * PAGE_SIZE, op: 'write', value: i }, { id: 0 });
    const load = (i: number) =>
      rpc.call('cpuAccess', { pid, addr: addr + i * PAGE_SIZE, op: 'read' }, { id: 0 });

    // The replica's first write fault: the batch filled and pid indexed — once the process is
    // known to exist (HEXISTS of {p:pid}:mm, another hash slot than the index: a refused fault
    // must not grow the index) — then the fault. Once per replica and pid.
    const first = await mmCalls(() => store(0));
    expect(first.sort()).toEqual(['fault', 'hexists', 'invIndex', 'rmqueueBulk']);

    const writes = await mmCalls(async () => {
      for (let i = 1; i <= 8; i++) await store(i);
    });
    const reads = await mmCalls(async () => {
      for (let i = 9; i <= 12; i++) expect((await load(i)).value).toBe(0);
    });
    console.log(
      `Redis calls from mm: write fault on an untouched page ${writes.length / 8}, ` +
        `read fault of the zero page ${reads.length / 4} (${JSON.stringify({ writes, reads })})`,
    );
    expect(writes).toEqual(Array(8).fill('fault'));
    expect(reads).toEqual(Array(4).fill('fault'));
    for (let i = 0; i <= 8; i++) expect((await load(i)).value).toBe(i);
  });
});
