/**
 * The hot subjects served past Nest's router (fastRpc, libs/runtime nest.ts) against a real
 * nats-server: the same reply envelope as a Nest handler's, a typed EBADMSG for bad bytes with
 * the handler never run, typed errors, and the shutdown of MmlabServerNats (drain; what is
 * still running at the grace's end is refused with ESHUTDOWN).
 */
import 'reflect-metadata';
import type { INestMicroservice } from '@nestjs/common';
import { Module } from '@nestjs/common';
import type { NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MmlabError, RPC, type ReqParsed, type Res } from '@mmlab/protocol';
import {
  RpcClient,
  Tracer,
  connectNats,
  controlController,
  encodeRequest,
  fastRpc,
  startMicroservice,
} from '@mmlab/runtime';
import { type ServerHandle, startNats } from '@mmlab/runner';
import { codeOf } from '@mmlab/testing';

const PTE: Res<'fault'> = { pfn: 5, gen: 2, writable: true, kind: 'anon', retries: 0 };

describe('fastRpc: a raw subscription with the envelope of a Nest handler', () => {
  let nats: ServerHandle;
  let nc: NatsConnection;
  let rpc: RpcClient;
  let app: INestMicroservice;
  /** requests the fault handler ran */
  const ran: Array<ReqParsed<'fault'>> = [];
  /** pid → what the handler does: hang until released, or fail */
  let hang: Promise<void> = Promise.resolve();

  const start = async (): Promise<INestMicroservice> => {
    const tracer = new Tracer(null, 'mm', 'mm-fast');
    @Module({ controllers: [controlController(tracer)] })
    class TestModule {}
    const fast = fastRpc('fault', undefined, async (req) => {
      ran.push(req);
      if (req.pid === 2) throw new MmlabError('ENOMEM', 'no frame');
      if (req.pid === 3) await hang;
      return PTE;
    });
    return startMicroservice(TestModule, { natsUrl: nats.url, name: 'mm-fast', fast: [fast] });
  };

  beforeAll(async () => {
    nats = await startNats();
    nc = await connectNats(nats.url, 'fast-rpc-test');
    rpc = new RpcClient(nc, 5000);
    app = await start();
  });
  afterAll(async () => {
    await app?.close();
    await nc?.close();
    await nats?.stop();
  });

  it('answers with the reply packet Nest sends, key for key', async () => {
    const req = { pid: 1, addr: 4096, access: 'write', agent: 'cpu0' } as const;
    const fastRaw = JSON.parse(
      (await nc.request(RPC.fault.subject, encodeRequest(RPC.fault.subject, req))).string(),
    ) as Record<string, unknown>;
    const nestRaw = JSON.parse(
      (await nc.request(RPC.ping.subject, encodeRequest(RPC.ping.subject, {}))).string(),
    ) as Record<string, unknown>;
    expect(Object.keys(fastRaw)).toEqual(Object.keys(nestRaw));
    expect(fastRaw).toMatchObject({ response: PTE, isDisposed: true });
    expect(await rpc.call('fault', req)).toEqual(PTE);
  });

  it('answers bad bytes and a request that breaks the schema with EBADMSG, running nothing', async () => {
    const before = ran.length;
    const raw = await nc.request(RPC.fault.subject, '\u0000not json{');
    const reply = JSON.parse(raw.string()) as { err?: { code?: string } };
    expect(reply.err?.code).toBe('EBADMSG');
    const bad = await nc.request(
      RPC.fault.subject,
      JSON.stringify({ id: 'x', pattern: RPC.fault.subject, data: { pid: 'one' } }),
    );
    expect((JSON.parse(bad.string()) as { err?: { code?: string } }).err?.code).toBe('EBADMSG');
    expect(ran.length).toBe(before);
  });

  it("passes the handler's typed error on", async () => {
    expect(
      await codeOf(rpc.call('fault', { pid: 2, addr: 4096, access: 'read', agent: 'cpu0' })),
    ).toBe('ENOMEM');
  });

  it('on close, answers what finishes within the grace and refuses the rest with ESHUTDOWN', async () => {
    let release!: () => void;
    hang = new Promise<void>((r) => (release = r));
    const hung = rpc.call(
      'fault',
      { pid: 3, addr: 4096, access: 'read', agent: 'cpu0' },
      { timeoutMs: 10_000 },
    );
    const started = ran.length;
    await nc.flush();
    while (ran.length === started) await new Promise((r) => setTimeout(r, 10));
    const closing = app.close();
    expect(await codeOf(hung)).toBe('ESHUTDOWN');
    await closing;
    release();
    // nobody serves the subject any more
    expect(
      await codeOf(rpc.call('fault', { pid: 1, addr: 4096, access: 'read', agent: 'cpu0' })),
    ).toBe('ENOHANDLER');
    app = await start(); // for afterAll
  });
});
