/**
 * The anonymous-memory paths of the patch, without subscribers: fork and COW, munmap,
 * madvise(DONTNEED), mprotect, mremap, exit and MAP_SHARED across fork, in patched and legacy
 * mode, against real services.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Mode, PAGE_SIZE } from '@mmlab/protocol';
import type { Store } from '@mmlab/model';
import type { RpcClient } from '@mmlab/runtime';
import { type TestLab, type TraceLog, codeOf, startTestLab } from '@mmlab/testing';

describe.each<Mode>(['patched', 'legacy'])('anonymous paths (%s)', (mode) => {
  let t: TestLab | undefined;
  let rpc: RpcClient;
  let store: Store;
  let trace: TraceLog;

  beforeAll(async () => {
    t = await startTestLab(
      { mode, frames: 96, cpus: 2, mmReplicas: 2, observer: false },
      { rpcTimeoutMs: 20_000 },
    );
    ({ rpc, store, trace } = t);
  });
  afterAll(async () => {
    await t?.stop();
  });

  const read = async (cpu: number, pid: number, addr: number) =>
    (await rpc.call('cpuAccess', { pid, addr, op: 'read' }, { id: cpu })).value;
  const write = (cpu: number, pid: number, addr: number, value: number) =>
    rpc.call('cpuAccess', { pid, addr, op: 'write', value }, { id: cpu });

  it('fork shares frames copy-on-write: each side sees its own writes, frames are freed when both are gone', async () => {
    const free0 = (await rpc.call('meminfo', {})).free;
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 4, prot: 'rw' });
    await write(0, pid, addr, 1);
    await write(0, pid, addr + PAGE_SIZE, 2);
    const { pid: child } = await rpc.call('fork', { pid });
    expect(await read(1, child, addr)).toBe(1);
    await write(0, pid, addr, 10); // parent breaks COW
    await write(1, child, addr + PAGE_SIZE, 20); // child breaks COW on the other page
    expect(await read(1, pid, addr)).toBe(10);
    expect(await read(0, child, addr)).toBe(1);
    expect(await read(0, pid, addr + PAGE_SIZE)).toBe(2);
    expect(await read(1, child, addr + PAGE_SIZE)).toBe(20);
    const ptP = await store.pageTable(pid);
    const ptC = await store.pageTable(child);
    expect(ptP.get(addr / PAGE_SIZE)!.pfn).not.toBe(ptC.get(addr / PAGE_SIZE)!.pfn);
    await rpc.call('exit', { pid: child });
    await rpc.call('exit', { pid });
    expect((await rpc.call('meminfo', {})).free).toBe(free0);
    expect(await codeOf(rpc.call('mmap', { pid, pages: 1, prot: 'rw' }))).toBe('ESRCH');
  });

  it('COW reuses a pinned page mapped once (reuse_swap_page: mapcount, not refcount, v3.7)', async () => {
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 1, prot: 'rw' });
    await write(0, pid, addr, 1);
    const [pin] = (
      await rpc.call('gup', { pid, addr, pages: 1, write: true, pin: true, agent: 'dev0' })
    ).pages;
    // read-only and writable again: the PTE stays read-only until the next write fault
    await rpc.call('mprotect', { pid, addr, pages: 1, prot: 'r' });
    await rpc.call('mprotect', { pid, addr, pages: 1, prot: 'rw' });
    await write(0, pid, addr, 2);
    const fault = await trace.next(
      (x) =>
        x.kind === 'fault.end' &&
        x.pid === pid &&
        x.addr === addr &&
        (x.how === 'wp-reuse' || x.how === 'wp-copy'),
    );
    expect(fault).toMatchObject({ how: 'wp-reuse', pfn: pin.pfn });
    expect((await store.pageTable(pid)).get(addr / PAGE_SIZE)!.pfn).toBe(pin.pfn);
    // The device reading through its pin sees the CPU's store (a copy would have left it on 1).
    expect(await store.frameAccess(pin.pfn, 'read', undefined, 'dev0')).toMatchObject({ value: 2 });
    await rpc.call('unpin', { pid, pages: [{ pfn: pin.pfn, gen: pin.gen }], agent: 'dev0' });
    await rpc.call('exit', { pid });
  });

  it('MAP_SHARED anonymous memory stays shared across fork', async () => {
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 2, prot: 'rw', flags: ['shared'] });
    await write(0, pid, addr, 5);
    const { pid: child } = await rpc.call('fork', { pid });
    await write(1, child, addr, 6);
    await write(1, child, addr + PAGE_SIZE, 7);
    expect(await read(0, pid, addr)).toBe(6);
    expect(await read(0, pid, addr + PAGE_SIZE)).toBe(7);
    await rpc.call('exit', { pid: child });
    expect(await read(0, pid, addr)).toBe(6);
    await rpc.call('exit', { pid });
  });

  it('madvise(DONTNEED) drops the pages and the next touch reads zero; munmap makes it SIGSEGV', async () => {
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 3, prot: 'rw' });
    for (let p = 0; p < 3; p++) await write(p % 2, pid, addr + p * PAGE_SIZE, 100 + p);
    expect(await rpc.call('madvise', { pid, addr, pages: 2, advice: 'dontneed' })).toEqual({
      zapped: 2,
      freed: 2,
    });
    expect(await read(1, pid, addr)).toBe(0);
    expect(await read(1, pid, addr + 2 * PAGE_SIZE)).toBe(102);
    await rpc.call('munmap', { pid, addr, pages: 3 });
    expect(
      await codeOf(
        rpc.call('cpuAccess', { pid, addr: addr + 2 * PAGE_SIZE, op: 'read' }, { id: 0 }),
      ),
    ).toBe('SIGSEGV');
    await rpc.call('exit', { pid });
  });

  it('mprotect downgrades with a TLB shootdown and upgrades back; PROT_NONE keeps the data', async () => {
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 2, prot: 'rw' });
    await write(0, pid, addr, 7);
    expect(await read(1, pid, addr)).toBe(7); // cpu1 caches it
    await rpc.call('mprotect', { pid, addr, pages: 2, prot: 'r' });
    expect(await codeOf(write(0, pid, addr, 8))).toBe('SIGSEGV');
    expect(await read(1, pid, addr)).toBe(7);
    await rpc.call('mprotect', { pid, addr, pages: 1, prot: 'none' });
    expect(await codeOf(rpc.call('cpuAccess', { pid, addr, op: 'read' }, { id: 1 }))).toBe(
      'SIGSEGV',
    );
    await rpc.call('mprotect', { pid, addr, pages: 2, prot: 'rw' });
    await write(0, pid, addr, 9); // write fault on the read-only PTE: reuse, the page is ours
    expect(await read(1, pid, addr)).toBe(9);
    expect(
      await codeOf(rpc.call('mprotect', { pid, addr: addr + 5 * PAGE_SIZE, pages: 1, prot: 'r' })),
    ).toBe('ENOMEM');
    await rpc.call('exit', { pid });
  });

  it('mremap moves the pages (and grows, and shrinks); with no subscriber, no notifier range', async () => {
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 4, prot: 'rw' });
    for (let p = 0; p < 4; p++) await write(0, pid, addr + p * PAGE_SIZE, 50 + p);
    expect(await read(1, pid, addr + PAGE_SIZE)).toBe(51);
    const from = trace.events.length;
    const grown = await rpc.call('mremap', { pid, addr, pages: 4, newPages: 6 });
    expect(grown.moved).toBe(4);
    for (let p = 0; p < 4; p++) expect(await read(1, pid, grown.addr + p * PAGE_SIZE)).toBe(50 + p);
    expect(await read(1, pid, grown.addr + 5 * PAGE_SIZE)).toBe(0);
    expect(
      await codeOf(rpc.call('cpuAccess', { pid, addr: addr + PAGE_SIZE, op: 'read' }, { id: 1 })),
    ).toBe('SIGSEGV');
    // mm_has_notifiers() is false: nothing recorded or traced (the one constant range an mm
    // with a subscriber gets is in test/notifier.e2e-spec.ts)
    expect(trace.events.slice(from).filter((e) => e.kind.startsWith('mn.'))).toEqual([]);
    const before = (await rpc.call('meminfo', {})).free;
    const shrunk = await rpc.call('mremap', { pid, addr: grown.addr, pages: 6, newPages: 2 });
    expect(shrunk.moved).toBe(2);
    expect((await rpc.call('meminfo', {})).free).toBe(before + 2);
    expect(await read(0, pid, shrunk.addr + PAGE_SIZE)).toBe(51);
    await rpc.call('exit', { pid });
  });

  it('with no subscriber anywhere, no notifier event at all (mm_has_notifiers, v3.7), and no might_sleep', () => {
    // every test above forked, COWed, munmapped, mprotected, mremapped, madvised and exited
    const did = new Set(trace.events.map((e) => e.kind));
    for (const k of ['pte.clear', 'tlb.flush', 'frame.free', 'process.exit'] as const)
      expect(did.has(k)).toBe(true);
    expect(trace.events.filter((e) => e.kind === 'might_sleep')).toEqual([]);
    expect(trace.events.filter((e) => e.kind.startsWith('mn.'))).toEqual([]);
  });
});
