/**
 * The whole lab on a Redis Cluster (three masters, Debian redis-server in cluster mode): every
 * key of one address space carries the hash tag {p:<pid>} and every key of physical memory
 * {mem}, so every Lua script touches one slot and runs unchanged. Driving every path that
 * runs a script proves it: a script that touched two slots would fail with CROSSSLOT.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@mmlab/protocol';
import { Store } from '@mmlab/model';
import { type ClusterHandle, newRedisUsers, startRedisCluster } from '@mmlab/runner';
import { type TestLab, codeOf, startTestLab } from '@mmlab/testing';

describe('the lab on a Redis Cluster', () => {
  let cluster: ClusterHandle;
  let t: TestLab;

  beforeAll(async () => {
    // with the lab's ACL users on every node (libs/model acl.ts), as natively and in k8s
    cluster = await startRedisCluster(3, { users: newRedisUsers() });
    t = await startTestLab(
      {
        mode: 'patched',
        frames: 64,
        cpus: 2,
        mmReplicas: 2,
        observer: false,
        subscribers: [{ name: 'hca0', kind: 'hca', invalidateLatencyMs: 5 }],
      },
      { redisUrl: cluster.url, redisUsers: cluster.urls, rpcTimeoutMs: 20_000 },
    );
  });
  afterAll(async () => {
    await t?.stop();
    await cluster?.stop();
  });

  const write = (cpu: number, pid: number, addr: number, value: number) =>
    t.rpc.call('cpuAccess', { pid, addr, op: 'write', value }, { id: cpu });
  const read = async (cpu: number, pid: number, addr: number) =>
    (await t.rpc.call('cpuAccess', { pid, addr, op: 'read' }, { id: cpu })).value;

  it('spreads the lab over the cluster: address spaces hash to different slots', async () => {
    const slots = new Set<number>();
    for (let pid = 1; pid <= 6; pid++)
      slots.add(
        Number(
          await (
            t.store.redis as never as { cluster: (...a: string[]) => Promise<number> }
          ).cluster('KEYSLOT', `{p:${pid}}`),
        ),
      );
    expect(slots.size).toBeGreaterThan(1);
  });

  it('runs the anonymous paths: faults, COW, fork, mprotect, mremap, madvise, munmap, exit', async () => {
    const { pid } = await t.rpc.call('processCreate', {});
    const { addr } = await t.rpc.call('mmap', { pid, pages: 4, prot: 'rw' });
    expect(await read(1, pid, addr)).toBe(0); // zero page
    await write(0, pid, addr, 1); // COW of the zero page under a PT-lock lease
    await write(0, pid, addr + PAGE_SIZE, 2);
    const { pid: child } = await t.rpc.call('fork', { pid });
    await write(1, child, addr, 10);
    expect(await read(0, pid, addr)).toBe(1);
    expect(await read(0, child, addr)).toBe(10);
    await t.rpc.call('mprotect', { pid, addr, pages: 4, prot: 'r' });
    expect(await codeOf(write(0, pid, addr, 3))).toBe('SIGSEGV');
    await t.rpc.call('mprotect', { pid, addr, pages: 4, prot: 'rw' });
    await write(0, pid, addr, 3); // reuse: the page is ours again after the child's COW
    const moved = await t.rpc.call('mremap', { pid, addr, pages: 4, newPages: 2 });
    expect(await read(1, pid, moved.addr + PAGE_SIZE)).toBe(2);
    expect(
      await t.rpc.call('madvise', { pid, addr: moved.addr, pages: 1, advice: 'dontneed' }),
    ).toMatchObject({ zapped: 1 });
    await t.rpc.call('munmap', { pid: child, addr, pages: 4 });
    await t.rpc.call('exit', { pid: child });
    await t.rpc.call('exit', { pid });
  });

  it('runs the notifier and the HCA: ODP faults, invalidations, pins', async () => {
    const { pid } = await t.rpc.call('processCreate', {});
    const { addr } = await t.rpc.call('mmap', { pid, pages: 2, prot: 'rw' });
    const { mr } = await t.rpc.call(
      'hcaRegMr',
      { pid, addr, pages: 2, odp: true, access: ['read', 'write'] },
      { id: 'hca0' },
    );
    await t.rpc.call('hcaRdmaWrite', { mr, addr, value: 7 }, { id: 'hca0' });
    expect(await read(0, pid, addr)).toBe(7);
    const pinned = await t.rpc.call(
      'hcaRegMr',
      { pid, addr, pages: 2, odp: false, access: ['read'] },
      { id: 'hca0' },
    );
    expect((await t.rpc.call('hcaRdmaRead', { mr: pinned.mr, addr }, { id: 'hca0' })).value).toBe(
      7,
    );
    await t.rpc.call('hcaDeregMr', { mr: pinned.mr }, { id: 'hca0' });
    await t.rpc.call('munmap', { pid, addr, pages: 2 });
    expect(await codeOf(t.rpc.call('hcaRdmaRead', { mr, addr }, { id: 'hca0' }))).toBe('EFAULT');
    await t.rpc.call('exit', { pid });
    expect((await t.rpc.call('meminfo', {})).free).toBe(64);
  });

  it('runs the lease, cpumask and frame scripts directly from a store on the cluster', async () => {
    // as the mm user (acl.ts): its rights cover every script on the cluster
    const store = new Store(cluster.urls!.mm);
    try {
      const { pid } = await t.rpc.call('processCreate', {});
      await t.rpc.call('mmap', { pid, pages: 1, prot: 'rw' });
      await store.cpumaskClear(pid, 'cpu9');
      const lock = await store.ptlLock(pid, 'ptl:0', 'test', 1000);
      if (!lock.ok) throw new Error('lock');
      expect(await store.leaseRenew(`{p:${pid}}:ptl:0`, `test|${lock.token}`, 1000)).toBe(true);
      expect(await store.ptlHeldBy(pid, 'test', 0, PAGE_SIZE)).toBe('ptl:0');
      expect(await store.leaseRelease(`{p:${pid}}:ptl:0`, `test|${lock.token}`)).toBe(true);
      // The reaper's index ({mm}) and its fence ({p:<pid>}): each script on its own slot.
      await store.invIndex('ghost-c.1', pid);
      expect(await store.invPids('ghost-c.1')).toEqual([pid]);
      expect(await store.mmAliveMany(['ghost-c.1'])).toEqual(new Map([['ghost-c.1', false]]));
      expect(await store.invFence(pid, 'ghost-c.1')).toBe(true);
      expect(await store.invUnindex('ghost-c.1', pid)).toBe(0);
      expect(await store.invOwners()).not.toContain('ghost-c.1');
      // A replica's batch of frames ({mem}), and what reaps it: its index made final ({mm}),
      // its fence and installs read on a pid ({p:<pid>}) — each script on its own slot.
      const batch = await store.rmqueueBulk('ghost-c.2', 4, []);
      expect(batch.taken.length).toBeGreaterThan(0);
      expect(await store.mmMarkDead('ghost-c.2')).toEqual([]);
      expect(await store.pcpFence(pid, 'ghost-c.2')).toEqual({ fenced: true, installed: [] });
      const byPfn = (a: number, b: number) => a - b;
      expect((await store.reserveReap('ghost-c.2', [])).freed.sort(byPfn)).toEqual(
        batch.taken.map((t) => t.pfn).sort(byPfn),
      );
      const f = (await store.allocPage(null))!;
      await store.copyPage(0, f.pfn);
      expect(await store.frameAccess(f.pfn, 'read', undefined, 'test')).toMatchObject({ value: 0 });
      await store.putPages([f]);
      expect((await store.memInfo()).frames).toBe(64);
    } finally {
      await store.quit();
    }
  });
});
