/**
 * `mmlab fsck` on a real lab: clean after real work (faults, COW, fork, mprotect, mremap,
 * munmap, a pin charged to pinned_vm), then each kind of corruption written into the real Redis
 * is found with its code and key, the CLI exits 1 with the list, and 2 when there is no Redis
 * to read.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@mmlab/protocol';
import { MEM, type Store, procKeys, subKeys } from '@mmlab/model';
import type { RpcClient } from '@mmlab/runtime';
import { type TestLab, runMmlab, startTestLab } from '@mmlab/testing';

describe('mmlab fsck', () => {
  let t: TestLab | undefined;
  let rpc: RpcClient;
  let store: Store;

  beforeAll(async () => {
    t = await startTestLab(
      { mode: 'patched', frames: 32, cpus: 1, mmReplicas: 1, leaseTtlMs: 600, observer: false },
      // this file corrupts the state on purpose, and checks fsck itself
      { fsck: { skip: 'corrupts the state on purpose' }, trace: false },
    );
    ({ rpc, store } = t);
  });
  afterAll(async () => {
    await t?.stop();
  });

  it('exits 0 on a lab after real work, 1 with every finding once the state is corrupted', async () => {
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 8, prot: 'rw' });
    const page = (i: number) => addr + i * PAGE_SIZE;
    for (let i = 0; i < 6; i++)
      await rpc.call('cpuAccess', { pid, addr: page(i), op: 'write', value: i + 1 }, { id: 0 });
    await rpc.call('cpuAccess', { pid, addr: page(6), op: 'read' }, { id: 0 });
    const { pid: child } = await rpc.call('fork', { pid });
    await rpc.call('cpuAccess', { pid, addr: page(0), op: 'write', value: 9 }, { id: 0 });
    await rpc.call('mprotect', { pid, addr: page(4), pages: 2, prot: 'r' });
    const moved = await rpc.call('mremap', { pid: child, addr: page(2), pages: 2, newPages: 1 });
    await rpc.call('munmap', { pid, addr: page(1), pages: 1 });
    const pinned = await rpc.call('gup', {
      pid: child,
      addr: moved.addr,
      pages: 1,
      write: false,
      pin: true,
      agent: 'test',
    });
    expect(pinned.pages).toHaveLength(1);

    const clean = await runMmlab(['fsck', '--redis', t!.lab.redisUrl]);
    expect(clean.stderr).toBe('');
    expect(clean.stdout).toMatch(/^fsck: clean \(32 frames, 2 address spaces\)$/m);
    expect(clean.code).toBe(0);

    // Corruption, each of one kind, written straight into Redis:
    const k = procKeys(pid);
    const vmas = await store.vmas(pid);
    const past = vmas[vmas.length - 1].end + 5;
    const used = (await store.pageTable(pid)).get(page(0) / PAGE_SIZE)!;
    await store.pokePte(pid, past, { ...used, writable: false }); // in no VMA; mapcount + 1
    const leaked = (await store.allocPage(null))!; // mapcount 1, no PTE
    // the last frames of the free list were never allocated: free0 pushed at its head is on
    // it twice; free1 gets a refcount while free; free2 a state byte that means nothing
    const [free2, free1, free0] = (await store.freeList()).slice(-3);
    await store.freeListPush(free0);
    await store.frameSet(free1, { ref: 2 });
    await store.frameSet(free2, { state: 7 });
    await store.pokePte(pid, page(4) / PAGE_SIZE, { ...used, writable: true }); // writable in r
    await store.redis.set(k.semW, 'mm-9.dead/mm-9/munmap#1|77', 'PX', 60_000); // dead holder
    // a reader of the child's mmap_sem left by a dead incarnation, its lease a minute long, and
    // one whose lease has expired (no holder any more: not a finding)
    const [sec] = await store.redis.time();
    const kc = procKeys(child);
    await store.redis.zadd(kc.semR, Number(sec) * 1000 + 60_000, 'mm-9.dead/mm-9/madvise#2|78');
    await store.redis.zadd(kc.semR, Number(sec) * 1000 - 60_000, 'mm-9.dead/mm-9/madvise#3|79');
    // the child's pin, no longer charged to its pinned_vm (as if ib_umem_release had run with
    // the pin still held)
    await store.redis.hset(kc.mm, 'pinnedVm', 0);
    // the child's page-table page forgotten: no munmap, mprotect or exit would visit its PTEs
    await store.redis.del(kc.pmds);
    // a writer of the child's mmap_sem beside its (dead) reader
    await store.redis.set(kc.semW, 'mm-9.dead/mm-9/mprotect#4|80', 'PX', 60_000);
    // subscribers: ghost0 on the parent's :mn without it in its registrations; gone0 registered
    // both ways on the child, and fenced
    await store.redis.hset(k.mn, 'ghost0', `${Date.now()}|invalidate_range_start`);
    await store.redis.hset(kc.mn, 'gone0', `${Date.now()}|invalidate_range_start`);
    await store.redis.sadd(subKeys('gone0').regs, String(child));
    await store.redis.sadd(MEM.fenced, 'gone0');
    // (an open invalidation of a dead owner is finished by the running mm within two TTLs: that
    // rule is shown by the unit tests; here, a record with no owner at all)
    await store.redis.hset(k.inv, 'mm-9/munmap#1~dead.1', '{}');
    // and one in both hashes that the running mm cannot read, so never finishes
    await store.redis.hset(k.inv, 'mm-9/munmap#2~dead.2', 'not json');
    await store.redis.hset(k.invown, 'mm-9/munmap#2~dead.2', 'mm-9.dead|open');

    const r = await runMmlab(['fsck', '--redis', t!.lab.redisUrl]);
    expect(r.code).toBe(1);
    const lines = r.stdout.trim().split('\n');
    expect(lines.at(-1)).toMatch(/^fsck: \d+ finding\(s\)/);
    const found = lines.slice(0, -1);
    const has = (code: string, key: string, what: RegExp) =>
      expect(found.filter((l) => l.startsWith(`${code} ${key}: `) && what.test(l))).toHaveLength(1);
    has('pte-outside-vma', k.pte, new RegExp(`vpn ${past} `));
    has('mapcount', MEM.frames, new RegExp(`pfn ${leaked.pfn} has mapcount 1 but 0 PTEs`));
    has('free-list-dup', MEM.frames, new RegExp(`pfn ${free0} is on the free list 2 times`));
    has('frame-state', MEM.frames, new RegExp(`free pfn ${free1} has refcount 2, mapcount 0`));
    has('frame-state', MEM.frames, new RegExp(`pfn ${free2} is state 7 \\(gen 0, ref 0, map 0\\)`));
    has('free-list-used', MEM.frames, new RegExp(`pfn ${free2} is on the free list but state 7`));
    has('pte-prot', k.pte, /writable in a r VMA/);
    has('lease-dead-owner', k.semW, /mm-9\.dead/);
    has('lease-dead-owner', kc.semR, /mm-9\.dead\/mm-9\/madvise#2/);
    expect(found.filter((l) => l.includes('madvise#3'))).toEqual([]);
    has(
      'pinned-vm',
      MEM.frames,
      /hold 1 references beyond their mappings \(pins\) but only 0 pages/,
    );
    has('pte-no-pmd', kc.pmds, new RegExp(`vpn ${moved.addr / PAGE_SIZE} `));
    has('sem-conflict', kc.semR, /held for write by mm-9\.dead\/mm-9\/mprotect#4 and for read/);
    has('mn-registry', subKeys('ghost0').regs, new RegExp(`pid ${pid}: ghost0 is registered`));
    has('mn-registry', kc.mn, new RegExp(`pid ${child}: gone0 is fenced but still registered`));
    has('inv-corrupt', k.inv, /mm-9\/munmap#1~dead\.1 is only in :inv/);
    has('inv-corrupt', k.inv, /mm-9\/munmap#2~dead\.2's record does not read/);
    // the PTE past the VMAs and the one made writable both map `used`: its mapcount is off too
    has('mapcount', MEM.frames, new RegExp(`pfn ${used.pfn} has mapcount`));

    const json = await runMmlab(['fsck', '--redis', t!.lab.redisUrl, '--json']);
    expect(json.code).toBe(1);
    const report = JSON.parse(json.stdout) as { ok: boolean; findings: Array<{ code: string }> };
    expect(report.ok).toBe(false);
    expect(report.findings.map((f) => f.code)).toEqual(
      found.map((l) => l.slice(0, l.indexOf(' '))),
    );
  });

  it('exits 2 when there is no state to read', async () => {
    const r = await runMmlab(['fsck', '--redis', 'redis://127.0.0.1:1']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/cannot read the state at redis:\/\/127\.0\.0\.1:1/);
    if (!process.env.REDIS_URL) {
      const none = await runMmlab(['fsck']);
      expect(none.stderr).toMatch(/no Redis to check/);
      expect(none.code).toBe(2);
    }
  });
});
