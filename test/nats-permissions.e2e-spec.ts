/**
 * The compose lab's NATS users and subject permissions (deploy/nats/nats.conf), for real: a
 * nats-server started from that file, every service connecting as its own user. The lab works
 * end to end — including notifier callbacks to an HCA and to a KVM — and a service that steps
 * outside its permissions is refused by the server.
 */
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@mmlab/protocol';
import { RpcClient, connectNats } from '@mmlab/runtime';
import {
  LocalLab,
  type ServerHandle,
  natsUrlWithUser,
  repoRoot,
  startNatsWithConfig,
} from '@mmlab/runner';
import { assertFsckClean, codeOf } from '@mmlab/testing';
import { type ForgeryLab, forgeries } from './support/forgeries';

const PASSWORDS = {
  NATS_MM_PASSWORD: 'mm-secret',
  NATS_CPU_PASSWORD: 'cpu-secret',
  NATS_HCA_PASSWORD: 'hca-secret',
  NATS_KVM_PASSWORD: 'kvm-secret',
  NATS_OBSERVER_PASSWORD: 'observer-secret',
  NATS_LAB_PASSWORD: 'lab-secret',
  NATS_LAB_API_PASSWORD: 'lab-api-secret',
};
const withUser = (url: string, user: string, pass: string) =>
  natsUrlWithUser(url, `${user}:${pass}`);

describe('NATS users and permissions of the compose lab', () => {
  let nats: ServerHandle;
  let lab: LocalLab;
  let rpc: RpcClient;
  let f: ForgeryLab;
  const closers: Array<() => Promise<unknown>> = [];

  beforeAll(async () => {
    nats = await startNatsWithConfig(
      path.join(repoRoot(), 'deploy', 'nats', 'nats.conf'),
      PASSWORDS,
    );
    lab = await LocalLab.start(
      {
        mode: 'patched',
        frames: 32,
        cpus: 1,
        mmReplicas: 2,
        subscribers: [
          { name: 'hca0', kind: 'hca' },
          { name: 'kvm0', kind: 'kvm' },
        ],
      },
      {
        natsUrl: nats.url,
        natsUsers: {
          mm: `mm:${PASSWORDS.NATS_MM_PASSWORD}`,
          cpu: `cpu:${PASSWORDS.NATS_CPU_PASSWORD}`,
          hca: `hca:${PASSWORDS.NATS_HCA_PASSWORD}`,
          kvm: `kvm:${PASSWORDS.NATS_KVM_PASSWORD}`,
          observer: `observer:${PASSWORDS.NATS_OBSERVER_PASSWORD}`,
        },
        readyUser: `lab:${PASSWORDS.NATS_LAB_PASSWORD}`,
      },
    );
    const nc = await connectNats(withUser(nats.url, 'lab', PASSWORDS.NATS_LAB_PASSWORD), 'lab');
    closers.push(() => nc.close());
    rpc = new RpcClient(nc, 10_000);
    f = {
      rpc,
      rogueUrl: withUser(nats.url, 'kvm', PASSWORDS.NATS_KVM_PASSWORD),
      observerUrl: lab.observerUrl!,
      redisUrl: lab.redisUrl,
      closers,
    };
  });
  afterAll(async () => {
    for (const c of closers) await c();
    try {
      if (lab) await assertFsckClean(lab.redisUrl);
    } finally {
      await lab?.stop();
      await nats?.stop();
    }
  });

  it('lets every service do its job as its own user: faults, shootdowns, notifier callbacks, device faults', async () => {
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 2, prot: 'rw' });
    expect((await rpc.call('cpuAccess', { pid, addr, op: 'read' }, { id: 0 })).value).toBe(0);
    await rpc.call('cpuAccess', { pid, addr, op: 'write', value: 4 }, { id: 0 }); // COW + shootdown
    const { mr } = await rpc.call(
      'hcaRegMr',
      { pid, addr, pages: 2, odp: true, access: ['read', 'write'] },
      { id: 'hca0' },
    );
    expect((await rpc.call('hcaRdmaRead', { mr, addr }, { id: 'hca0' })).value).toBe(4);
    // kvm0: a VM on the same memory, a guest fault through gup, and its notifier callbacks
    const kvm = { id: 'kvm0' };
    const { vm } = await rpc.call(
      'kvmCreateVm',
      { pid, memslots: [{ gfn: 0, pages: 2, addr }], vcpus: 1 },
      kvm,
    );
    expect((await rpc.call('kvmGuestRead', { vm, vcpu: 0, gfn: 0 }, kvm)).value).toBe(4);
    await rpc.call('kvmGuestWrite', { vm, vcpu: 0, gfn: 1, value: 9 }, kvm);
    expect(
      (await rpc.call('cpuAccess', { pid, addr: addr + PAGE_SIZE, op: 'read' }, { id: 0 })).value,
    ).toBe(9);
    expect(await rpc.call('munmap', { pid, addr, pages: 2 })).toMatchObject({ zapped: 2 });
    expect(
      await codeOf(rpc.call('hcaRdmaRead', { mr, addr: addr + PAGE_SIZE }, { id: 'hca0' })),
    ).toBe('EFAULT');
    expect(await codeOf(rpc.call('kvmGuestRead', { vm, vcpu: 0, gfn: 0 }, kvm))).toBe('EFAULT');
    expect(await rpc.call('kvmDestroyVm', { vm }, kvm)).toEqual({ destroyed: true });
    expect((await rpc.call('observerSync', {})).events).toBeGreaterThan(0);
  });

  it('refuses a CPU that calls a syscall, a subscriber that calls a CPU, a KVM that unpins', async () => {
    const cases = [
      // [user, password, an allowed request and the answer it gets, a forbidden subject]
      ['cpu', PASSWORDS.NATS_CPU_PASSWORD, 'fault', 'mmlab.mm.munmap'],
      ['hca', PASSWORDS.NATS_HCA_PASSWORD, 'gup', 'mmlab.cpu.0.access'],
      ['kvm', PASSWORDS.NATS_KVM_PASSWORD, 'gup', 'mmlab.mm.by.hca0.unpin'],
      ['observer', PASSWORDS.NATS_OBSERVER_PASSWORD, null, 'mmlab.mm.fault'],
    ] as const;
    for (const [user, pass, allowed, forbidden] of cases) {
      const nc = await connectNats(withUser(nats.url, user, pass), `probe-${user}`);
      closers.push(() => nc.close());
      const probe = new RpcClient(nc, 1000);
      if (allowed === 'fault')
        expect(
          await codeOf(
            probe.call('fault', { pid: 9999, addr: 0x10000000, access: 'read', agent: 'cpu9' }),
          ),
        ).toBe('ESRCH');
      if (allowed === 'gup')
        expect(
          await codeOf(
            probe.call('gup', {
              pid: 9999,
              addr: 0x10000000,
              pages: 1,
              write: false,
              pin: false,
              agent: user === 'hca' ? 'hca0' : 'kvm0',
            }),
          ),
        ).toBe('ESRCH');
      // The server drops a publish outside the user's permissions: nobody answers.
      expect(
        await codeOf(nc.request(forbidden, '{}', { timeout: 1000 })),
        `${user} → ${forbidden}`,
      ).not.toBe('ok');
    }
  });

  describe('a service gone rogue (kvm, with its own compose user)', () => forgeries(() => f));

  it('refuses a wrong password', async () => {
    await expect(connectNats(withUser(nats.url, 'mm', 'wrong'), 'intruder')).rejects.toThrow();
  });
});
