/**
 * Bad input on every subject gets a typed error back — never a crash, never a hang — and every
 * service still answers afterwards.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NatsConnection } from 'nats';
import { ALL_RPCS, PAGE_SIZE, type RpcDef, subjectFor } from '@mmlab/protocol';
import { type RpcClient, decodeReply } from '@mmlab/runtime';
import { type LocalLab } from '@mmlab/runner';
import { type TestLab, codeOf, startTestLab } from '@mmlab/testing';

const instanceOf = (d: RpcDef): string | number | undefined =>
  d.subject.startsWith('mmlab.cpu.')
    ? 1
    : d.subject.startsWith('mmlab.mm.{id}')
      ? 'mm-1'
      : d.subject.startsWith('mmlab.hca.') || d.subject.startsWith('mmlab.sub.')
        ? 'hca0'
        : d.subject.startsWith('mmlab.kvm.')
          ? 'kvm0'
          : undefined;

const BAD_PAYLOADS: Array<[string, (subject: string) => string]> = [
  ['bytes that are not JSON', () => '\u0000\u00ffnot json{'],
  ['an empty payload', () => ''],
  ['a JSON value that is not a packet', () => '[1, 2, 3]'],
  [
    'a packet whose data breaks the schema',
    (subject) => JSON.stringify({ id: 'x', pattern: subject, data: { bogus: true, pid: 'one' } }),
  ],
  ['a packet without data', (subject) => JSON.stringify({ id: 'y', pattern: subject })],
];

describe('malformed messages', () => {
  let t: TestLab | undefined;
  let lab: LocalLab;
  let nc: NatsConnection;
  let rpc: RpcClient;

  beforeAll(async () => {
    t = await startTestLab(
      {
        mode: 'patched',
        frames: 32,
        cpus: 2,
        mmReplicas: 2,
        subscribers: [
          { name: 'hca0', kind: 'hca' },
          { name: 'kvm0', kind: 'kvm' },
        ],
      },
      { rpcTimeoutMs: 10_000, trace: false },
    );
    ({ lab, nc, rpc } = t);
  });
  afterAll(async () => {
    await t?.stop();
  });

  it('covers every subject of the protocol', () => {
    expect(ALL_RPCS.length).toBeGreaterThanOrEqual(11);
  });

  for (const [name, d] of ALL_RPCS)
    for (const [what, payload] of BAD_PAYLOADS)
      it(`${d.subject}: ${what} → EBADMSG`, async () => {
        const subject = subjectFor(d, instanceOf(d), d.actor ? 'hca0' : undefined);
        const reply = await nc.request(subject, payload(subject), { timeout: 5000 });
        expect(await codeOf(Promise.resolve().then(() => decodeReply(name, reply.data)))).toBe(
          'EBADMSG',
        );
      });

  it('answers well-formed but impossible requests with their own typed errors', async () => {
    const { pid } = await rpc.call('processCreate', {});
    expect(await codeOf(rpc.call('mmap', { pid: 9999, pages: 1, prot: 'rw' }))).toBe('ESRCH');
    expect(
      await codeOf(
        rpc.call('fault', { pid: 9999, addr: 0x10000000, access: 'read', agent: 'cpu0' }),
      ),
    ).toBe('ESRCH');
    expect(await codeOf(rpc.call('munmap', { pid, addr: 0x10000001, pages: 1 }))).toBe('EINVAL');
    expect(
      await codeOf(rpc.call('cpuAccess', { pid, addr: 0x10000000, op: 'write' }, { id: 0 })),
    ).toBe('EBADMSG');
    expect(
      await codeOf(rpc.call('cpuAccess', { pid, addr: 0x10000000, op: 'read' }, { id: 0 })),
    ).toBe('SIGSEGV');
    expect(await codeOf(rpc.call('mmap', { pid, pages: 1 << 20, prot: 'rw' }))).toBe('ok');
    expect(
      await codeOf(
        rpc.call('mmap', { pid, pages: 1 << 20, prot: 'rw', flags: ['fixed' as never] }),
      ),
    ).toBe('EBADMSG');
  });

  it('leaves every service answering afterwards', async () => {
    const replies = await rpc.gather('ping', {}, { expect: lab.instances.length, timeoutMs: 5000 });
    expect(replies.map((r) => r.instance).sort()).toEqual([...lab.instances].sort());
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 2, prot: 'rw' });
    await rpc.call('cpuAccess', { pid, addr, op: 'write', value: 5 }, { id: 1 });
    expect((await rpc.call('cpuAccess', { pid, addr, op: 'read' }, { id: 0 })).value).toBe(5);
    expect(
      await rpc.call('cpuFlushTlb', { pid, start: addr, end: addr + PAGE_SIZE }, { id: 0 }),
    ).toEqual({ flushed: 1 });
    expect(await rpc.call('mmDebug', { stallUnderPtlMs: 0 }, { id: 'mm-1' })).toEqual({
      armed: false,
    });
    expect((await rpc.call('observerSync', {})).events).toBeGreaterThan(0);
    expect(
      (await rpc.gather('flush', {}, { expect: lab.instances.length, timeoutMs: 5000 })).length,
    ).toBe(lab.instances.length);
    expect(lab.instances.every((i) => lab.proc(i).exitCode === null)).toBe(true);
  });
});
