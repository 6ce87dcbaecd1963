/**
 * The foundation against real services: two mm replicas and several CPUs as separate
 * processes, a real nats-server and redis-server.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@mmlab/protocol';
import type { Store } from '@mmlab/model';
import type { RpcClient } from '@mmlab/runtime';
import { type TestLab, type TraceLog, codeOf, startTestLab } from '@mmlab/testing';

describe('anonymous memory through two mm replicas and four CPUs', () => {
  let t: TestLab | undefined;
  let rpc: RpcClient;
  let store: Store;
  let trace: TraceLog;

  beforeAll(async () => {
    t = await startTestLab(
      { mode: 'patched', frames: 128, cpus: 4, mmReplicas: 2, leaseTtlMs: 1000, observer: false },
      { rpcTimeoutMs: 20_000 },
    );
    ({ rpc, store, trace } = t);
  });
  afterAll(async () => {
    await t?.stop();
  });

  /** Every frame is either free (once) or mapped by exactly as many PTEs as its mapcount. */
  async function assertFrameAccounting(pids: number[]): Promise<void> {
    // The mm replicas' batches of frames go back first (meminfo drains them): a frame taken
    // into a batch is charged with no PTE yet (fsck counts it as its owner's mapping).
    await rpc.call('meminfo', {});
    const frames = await store.frames();
    const free = await store.freeList();
    expect(new Set(free).size).toBe(free.length); // no frame on the free list twice
    const mappers = new Map<number, number>();
    for (const pid of pids)
      for (const pte of (await store.pageTable(pid)).values())
        mappers.set(pte.pfn, (mappers.get(pte.pfn) ?? 0) + 1);
    for (const [pfn, f] of frames) {
      if (pfn === 0) continue;
      if (f.state === 'free') {
        expect(free, `free frame ${pfn} on the free list`).toContain(pfn);
        expect(mappers.get(pfn), `free frame ${pfn} still mapped`).toBeUndefined();
      } else {
        expect(free, `used frame ${pfn} not on the free list`).not.toContain(pfn);
        expect(mappers.get(pfn) ?? 0, `frame ${pfn} mapcount vs PTEs (leak if 0)`).toBe(f.map);
        expect(f.ref).toBe(f.map);
      }
    }
  }

  it('serves the basic anonymous paths: zero page, write fault, COW of the zero page, SIGSEGV, munmap', async () => {
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 16, prot: 'rw' });
    const zero = await rpc.call(
      'cpuAccess',
      { pid, addr: addr + 4 * PAGE_SIZE, op: 'read' },
      { id: 1 },
    );
    expect(zero).toMatchObject({ value: 0, pfn: 0, faults: 1, stale: false });
    await rpc.call(
      'cpuAccess',
      { pid, addr: addr + 3 * PAGE_SIZE, op: 'write', value: 42 },
      { id: 0 },
    );
    const r = await rpc.call(
      'cpuAccess',
      { pid, addr: addr + 3 * PAGE_SIZE, op: 'read' },
      { id: 1 },
    );
    expect(r.value).toBe(42);
    // cpu1 caches the zero page at page 4; cpu0's write must COW it and shoot cpu1's entry down.
    await rpc.call(
      'cpuAccess',
      { pid, addr: addr + 4 * PAGE_SIZE, op: 'write', value: 7 },
      { id: 0 },
    );
    expect(
      (await rpc.call('cpuAccess', { pid, addr: addr + 4 * PAGE_SIZE, op: 'read' }, { id: 1 }))
        .value,
    ).toBe(7);
    const ro = await rpc.call('mmap', { pid, pages: 1, prot: 'r' });
    expect(
      await codeOf(rpc.call('cpuAccess', { pid, addr: ro.addr, op: 'write', value: 1 }, { id: 0 })),
    ).toBe('SIGSEGV');
    expect((await rpc.call('cpuAccess', { pid, addr: ro.addr, op: 'read' }, { id: 0 })).value).toBe(
      0,
    );
    const guard = await rpc.call('mmap', { pid, pages: 1, prot: 'none' });
    expect(
      await codeOf(rpc.call('cpuAccess', { pid, addr: guard.addr, op: 'read' }, { id: 0 })),
    ).toBe('SIGSEGV');
    const before = await rpc.call('meminfo', {});
    const un = await rpc.call('munmap', { pid, addr, pages: 16 });
    expect(un).toEqual({ zapped: 2, freed: 2 }); // pages 3 and 4 (after its COW) had frames
    expect((await rpc.call('meminfo', {})).free).toBe(before.free + 2);
    expect(
      await codeOf(
        rpc.call('cpuAccess', { pid, addr: addr + 3 * PAGE_SIZE, op: 'read' }, { id: 1 }),
      ),
    ).toBe('SIGSEGV');
    await assertFrameAccounting([pid]);
  });

  it('keeps every PTE and frame when four CPUs fault concurrently on pages sharing one PT lock', async () => {
    const { pid } = await rpc.call('processCreate', {});
    const pages = 48; // one mmap, inside one page-table page: every fault contends for one PTE lock
    const { addr } = await rpc.call('mmap', { pid, pages, prot: 'rw' });
    const lock = `ptl:${Math.floor(addr / PAGE_SIZE / 512)}`;
    expect(Math.floor((addr / PAGE_SIZE + pages - 1) / 512)).toBe(
      Math.floor(addr / PAGE_SIZE / 512),
    );
    const from = trace.events.length;
    // Each CPU reads every page (zero page), then writes every page (COW of the zero page or a
    // write fault racing another CPU's), in its own order.
    const order = (cpu: number) =>
      Array.from({ length: pages }, (_, i) => (i * (2 * cpu + 1) + cpu * 7) % pages);
    const written = new Map<number, Set<number>>();
    await Promise.all(
      [0, 1, 2, 3].map(async (cpu) => {
        for (const p of order(cpu))
          await rpc.call('cpuAccess', { pid, addr: addr + p * PAGE_SIZE, op: 'read' }, { id: cpu });
        for (const p of order(cpu).reverse()) {
          const value = 1000 * (cpu + 1) + p;
          await rpc.call(
            'cpuAccess',
            { pid, addr: addr + p * PAGE_SIZE, op: 'write', value },
            { id: cpu },
          );
          written.set(p, (written.get(p) ?? new Set()).add(value));
        }
      }),
    );
    // No lost PTE: every page is mapped writable to its own frame, holding one of the values
    // written to it, and every CPU reads that same value.
    const pt = await store.pageTable(pid);
    const frames = await store.frames();
    const pfns = new Set<number>();
    for (let p = 0; p < pages; p++) {
      const pte = pt.get(addr / PAGE_SIZE + p);
      expect(pte, `page ${p} lost its PTE`).toBeDefined();
      expect(pte!.writable).toBe(true);
      expect(pte!.pfn).not.toBe(0);
      pfns.add(pte!.pfn);
      const data = frames.get(pte!.pfn)!.data;
      expect(written.get(p)).toContain(data);
      for (const cpu of [0, 1, 2, 3])
        expect(
          (
            await rpc.call(
              'cpuAccess',
              { pid, addr: addr + p * PAGE_SIZE, op: 'read' },
              { id: cpu },
            )
          ).value,
        ).toBe(data);
    }
    expect(pfns.size).toBe(pages); // no frame allocated twice
    await assertFrameAccounting([pid]); // and none leaked
    const runEvents = trace.events.slice(from);
    const faultsBy = new Set(
      runEvents.filter((e) => e.kind === 'fault.end' && e.result === 'ok').map((e) => e.instance),
    );
    expect([...faultsBy].sort()).toEqual(['mm-0', 'mm-1']); // both replicas served faults
    expect(runEvents.some((e) => e.kind === 'ptl.acquire' && e.lock === lock)).toBe(true); // COWs took the lock
    expect(
      runEvents.some((e) => e.kind === 'access' && (e.gen !== e.frameGen || e.frameFree)),
    ).toBe(false);
    await rpc.call('munmap', { pid, addr, pages });
    await assertFrameAccounting([pid]);
  });
});
