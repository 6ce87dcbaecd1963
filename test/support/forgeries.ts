/**
 * The forgeries issue 15 measured (a client on the bus acting in another's name), each tried by
 * a service gone rogue with its own NATS identity against a lab with hca0 (an RDMA HCA) and kvm0
 * (a KVM): every one must now do no harm — refused (by the NATS server's permissions, or by mm
 * with EPERM), nothing changed in Redis, the victim's memory intact; the lab's fsck runs after
 * (the caller's afterAll). Run natively (test/nats-identity.e2e-spec.ts: per-instance users made
 * by the runner) and with the compose lab's users (test/nats-permissions.e2e-spec.ts).
 */
import { expect, it } from 'vitest';
import type { NatsConnection } from 'nats';
import { PAGE_SIZE, RPC, subjectFor } from '@mmlab/protocol';
import { Store } from '@mmlab/model';
import { RpcClient, connectNats, encodeRequest } from '@mmlab/runtime';
import { codeOf, until } from '@mmlab/testing';

export interface ForgeryLab {
  /** the lab's owner */
  rpc: RpcClient;
  /** the NATS URL as the rogue service: kvm0's own identity */
  rogueUrl: string;
  observerUrl: string;
  redisUrl: string;
  closers: Array<() => Promise<unknown>>;
}

/** A raw request (any subject, any body): 'ok', a wire code, or how NATS refused it. */
async function raw(nc: NatsConnection, subject: string, data: unknown): Promise<string> {
  try {
    const m = await nc.request(subject, encodeRequest(subject, data), { timeout: 1500 });
    const r = JSON.parse(m.string()) as { err?: { code?: string } };
    return r.err?.code ?? 'ok';
  } catch (e) {
    return `nats: ${(e as { code?: string }).code ?? String(e)}`;
  }
}

export function forgeries(get: () => ForgeryLab): void {
  const rogue = async () => {
    const l = get();
    const nc = await connectNats(l.rogueUrl, 'rogue-kvm0');
    l.closers.push(() => nc.close());
    return { nc, rpc: new RpcClient(nc, 1500) };
  };
  /** a process with 2 written pages, hca0 holding them in a pinned MR, and their frames */
  const victim = async () => {
    const { rpc } = get();
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 2, prot: 'rw' });
    for (const i of [0, 1])
      await rpc.call(
        'cpuAccess',
        { pid, addr: addr + i * PAGE_SIZE, op: 'write', value: 70 + i },
        { id: 0 },
      );
    const { mr } = await rpc.call(
      'hcaRegMr',
      { pid, addr, pages: 2, odp: false, access: ['read', 'write'] },
      { id: 'hca0' },
    );
    const { pages } = await rpc.call('gup', {
      pid,
      addr,
      pages: 2,
      write: false,
      pin: false,
      agent: 'lab0',
    });
    return { pid, addr, mr, frames: pages.map((p) => ({ pfn: p.pfn, gen: p.gen })) };
  };
  const intact = async (v: Awaited<ReturnType<typeof victim>>) => {
    const { rpc, redisUrl } = get();
    for (const i of [0, 1])
      expect(
        (
          await rpc.call(
            'cpuAccess',
            { pid: v.pid, addr: v.addr + i * PAGE_SIZE, op: 'read' },
            { id: 0 },
          )
        ).value,
      ).toBe(70 + i);
    const store = new Store(redisUrl);
    try {
      for (const f of v.frames) {
        const c = await store.pageCounts(f.pfn);
        expect(c.gen).toBe(f.gen);
        expect(c.ref - c.map, `pfn ${f.pfn}: hca0's pin`).toBe(1);
      }
    } finally {
      await store.quit();
    }
  };
  const cleanup = async (v: Awaited<ReturnType<typeof victim>>) => {
    const { rpc } = get();
    await rpc.call('hcaDeregMr', { mr: v.mr }, { id: 'hca0' });
    await rpc.call('exit', { pid: v.pid });
  };

  it("cannot take, read or ack another device's notifier callbacks", async () => {
    const { rpc } = get();
    const { nc } = await rogue();
    let taken = 0;
    let refused: string | undefined;
    nc.subscribe('mmlab.sub.hca0.>', {
      callback: (err) => {
        if (err) refused = (err as { code?: string }).code ?? String(err);
        else taken++;
      },
    });
    await until(async () => refused !== undefined, 'the subscription refused');
    expect(refused).toBe('PERMISSIONS_VIOLATION');
    // an ODP MR: munmap sends hca0 its range start/end, which only hca0 receives and acks
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 2, prot: 'rw' });
    const { mr } = await rpc.call(
      'hcaRegMr',
      { pid, addr, pages: 2, odp: true, access: ['read', 'write'] },
      { id: 'hca0' },
    );
    await rpc.call('hcaRdmaWrite', { mr, addr, value: 5 }, { id: 'hca0' });
    await rpc.call('munmap', { pid, addr, pages: 2 });
    expect(taken).toBe(0);
    expect(await codeOf(rpc.call('hcaRdmaRead', { mr, addr }, { id: 'hca0' }))).toBe('EFAULT');
    // nor can it answer anyone's request: no _INBOX but its own, no callback subject
    expect(await raw(nc, subjectFor(RPC.mnInvalidateRangeStart, 'hca0'), {})).toMatch(/^nats: /);
    nc.publish('_INBOX.mm-0.forged', '{"response":{"inv":"x"}}');
    await rpc.call('hcaDeregMr', { mr }, { id: 'hca0' });
    await rpc.call('exit', { pid });
  });

  it('cannot unpin the pins of another device, under its name or its own', async () => {
    const v = await victim();
    const { nc, rpc: as } = await rogue();
    const pages = v.frames;
    // on hca0's subject: the NATS server drops it (kvm0 may publish only mmlab.mm.by.kvm0.>)
    expect(
      await raw(nc, subjectFor(RPC.unpin, undefined, 'hca0'), { pid: v.pid, pages, agent: 'hca0' }),
    ).toMatch(/^nats: /);
    // on its own subject, naming hca0: mm refuses it (the subject says who sent it)
    expect(
      await raw(nc, subjectFor(RPC.unpin, undefined, 'kvm0'), { pid: v.pid, pages, agent: 'hca0' }),
    ).toBe('EPERM');
    // as itself: the pins are hca0's ({mem}:pins), not kvm0's
    expect(await codeOf(as.call('unpin', { pid: v.pid, pages, agent: 'kvm0' }))).toBe('EPERM');
    // nor can it register or unregister hca0
    expect(
      await raw(nc, subjectFor(RPC.notifierUnregister, undefined, 'kvm0'), {
        pid: v.pid,
        subscriber: 'hca0',
      }),
    ).toBe('EPERM');
    await intact(v);
    await cleanup(v);
  });

  it("cannot write another process's memory: no CPU access, no other device's DMA", async () => {
    const v = await victim();
    const { nc } = await rogue();
    expect(
      await raw(nc, subjectFor(RPC.cpuAccess, 0), {
        pid: v.pid,
        addr: v.addr,
        op: 'write',
        value: 666,
      }),
    ).toMatch(/^nats: /);
    expect(
      await raw(nc, subjectFor(RPC.hcaRdmaWrite, 'hca0'), { mr: v.mr, addr: v.addr, value: 666 }),
    ).toMatch(/^nats: /);
    await intact(v);
    await cleanup(v);
  });

  it('cannot publish trace events as another service: refused on its subject, dropped on its own', async () => {
    const { observerUrl } = get();
    const { nc } = await rogue();
    const stats = async () =>
      (await (await fetch(`${observerUrl}/stats`)).json()) as { forged?: number; events: number };
    const before = (await stats()).forged ?? 0;
    const fake = (n: number) =>
      JSON.stringify({
        id: `hca0:${900_000 + n}`,
        ts: Date.now(),
        service: 'hca',
        instance: 'hca0',
        kind: 'frame.free',
        pfn: 4242,
        gen: 1,
      });
    nc.publish('mmlab.trace.hca.hca0', fake(1)); // dropped by the NATS server
    nc.publish('mmlab.trace.kvm.kvm0', fake(2)); // its own subject: dropped by the observer
    await nc.flush();
    await get().rpc.call('observerSync', {});
    await until(
      async () => ((await stats()).forged ?? 0) > before,
      'the observer counted the forgery',
    );
    expect((await stats()).forged).toBe(before + 1);
    const r = (await (await fetch(`${observerUrl}/events?kind=frame.free&limit=1000`)).json()) as {
      events: Array<{ pfn: number; instance: string }>;
    };
    expect(r.events.filter((e) => e.pfn === 4242)).toEqual([]);
  });
}
