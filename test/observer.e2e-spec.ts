/**
 * The observer against a real nats-server: trace events published the way services publish
 * them (Tracer over a raw nats connection), observerSync through RpcClient, the HTTP API
 * through supertest on the in-process Nest app.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { INestApplication } from '@nestjs/common';
import type { NatsConnection } from 'nats';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  MMAP_BASE,
  RPC,
  ReplyPacket,
  TRACE_REPLAY_SUBJECT,
  type TraceEvent,
  WireErrorSchema,
  traceSubject,
} from '@mmlab/protocol';
import type { InvariantVerdict } from '@mmlab/checker';
import { RpcClient, Tracer, connectNats, loadEnv, newLabToken, sleep } from '@mmlab/runtime';
import { type ServerHandle, startNats } from '@mmlab/runner';
// The e2e test drives the observer in-process through createObserverApp (a test, not an app).
// eslint-disable-next-line no-restricted-imports
import { TraceIntake, createObserverApp } from '../apps/observer/src/observer.app';

let nats: ServerHandle;
let app: INestApplication;
let nc: NatsConnection;
let rpc: RpcClient;
let http: ReturnType<typeof request>;
const traceFile = path.join(mkdtempSync(path.join(tmpdir(), 'mmlab-observer-')), 'trace.jsonl');

/** The lab's token, as `mmlab up` would give the observer. */
const TOKEN = newLabToken();

let mm: Tracer;
/** The planted use-after-free: a translation for gen 1 used after the frame became gen 2. */
let stale: TraceEvent;
let published: TraceEvent[] = [];

beforeAll(async () => {
  nats = await startNats();
  app = await createObserverApp(
    loadEnv({
      NATS_URL: nats.url,
      MMLAB_INSTANCE: 'observer-t',
      MMLAB_TRACE_FILE: traceFile,
      MMLAB_SOFTLOCKUP_MS: '50',
      MMLAB_LAB_TOKEN: TOKEN,
    }),
    { logger: false },
  );
  http = request(app.getHttpServer() as Server);
  nc = await connectNats(nats.url, 'observer-e2e');
  rpc = new RpcClient(nc);

  const m = (mm = new Tracer(nc, 'mm', 'mm-0'));
  const c = new Tracer(nc, 'cpu', 'cpu0');
  const t0 = 1_000_000;
  // Tracers send batches (per millisecond or per TRACE_BATCH_MAX events): the flushes below
  // send each tracer's pending batch at once, so that the events arrive interleaved across
  // instances as they were emitted (four batches: m ×4, c ×2, m ×1, c ×1).
  const sent = (e: TraceEvent, t: Tracer): TraceEvent => (void t.flush(), e);
  published = [
    m.emit({ kind: 'process.create', pid: 1, op: 'mm-0/create#1', ts: t0 }),
    m.emit({
      kind: 'vma.map',
      pid: 1,
      start: MMAP_BASE,
      end: MMAP_BASE + 8192,
      prot: 'rw',
      flags: [],
      ts: t0 + 1,
    }),
    m.emit({
      kind: 'ptl.acquire',
      pid: 1,
      lock: 'ptl:0',
      owner: 'mm-0',
      token: 1,
      waitMs: 0,
      ts: t0 + 2,
    }),
    sent(
      m.emit({
        kind: 'ptl.release',
        pid: 1,
        lock: 'ptl:0',
        owner: 'mm-0',
        token: 1,
        heldMs: 1,
        released: true,
        ts: t0 + 3,
      }),
      m,
    ),
    c.emit({
      kind: 'access',
      agent: 'cpu0',
      pid: 1,
      addr: MMAP_BASE,
      rw: 'write',
      value: 5,
      pfn: 3,
      gen: 1,
      frameGen: 1,
      frameFree: false,
      tStart: t0 + 4,
      tEnd: t0 + 5,
      ts: t0 + 5,
    }),
    sent(
      c.emit({
        kind: 'access',
        agent: 'cpu0',
        pid: 1,
        addr: MMAP_BASE,
        rw: 'read',
        value: 5,
        pfn: 3,
        gen: 1,
        frameGen: 1,
        frameFree: false,
        tStart: t0 + 6,
        tEnd: t0 + 7,
        ts: t0 + 7,
      }),
      c,
    ),
    sent(m.emit({ kind: 'process.create', pid: 2, ts: t0 + 8 }), m),
  ];
  stale = c.emit({
    kind: 'access',
    agent: 'cpu0',
    pid: 2,
    addr: MMAP_BASE,
    rw: 'read',
    value: 0,
    pfn: 3,
    gen: 1,
    frameGen: 2,
    frameFree: false,
    tStart: t0 + 9,
    tEnd: t0 + 10,
    ts: t0 + 10,
  });
  published.push(stale);
  // Malformed: not JSON, and JSON that breaks the schema.
  nc.publish(traceSubject('mm', 'mm-0'), 'not json at all');
  nc.publish(traceSubject('cpu', 'cpu0'), JSON.stringify({ kind: 'access', ts: 'now' }));
  // every tracer's pending batch sent, and the server has every message: the lab's barrier
  await Promise.all([m.flush(), c.flush()]);
  await nc.flush();
});

afterAll(async () => {
  await app?.close();
  await nc?.close();
  await nats?.stop();
});

describe('observer', () => {
  it('answers observerSync once every delivered event is stored', async () => {
    expect(await rpc.call('observerSync', {})).toEqual({ events: published.length });
  });

  it('answers ping and flush as instance observer-t', async () => {
    expect(await rpc.gather('ping', {}, { expect: 1 })).toEqual([
      { service: 'observer', instance: 'observer-t' },
    ]);
    expect(await rpc.gather('flush', {}, { expect: 1 })).toEqual([
      {
        service: 'observer',
        instance: 'observer-t',
        published: 0,
        replays: { asked: 0, run: 0 },
      },
    ]);
  });

  it('answers a malformed RPC with a typed EBADMSG', async () => {
    const msg = await nc.request(RPC.observerSync.subject, 'garbage', { timeout: 2000 });
    const reply = ReplyPacket.parse(JSON.parse(msg.string()));
    expect(reply.response).toBeUndefined();
    expect(WireErrorSchema.parse(reply.err)).toMatchObject({ code: 'EBADMSG', definite: true });
  });

  it('serves the stored events, filtered and paged', async () => {
    const all = await http.get('/events').expect(200);
    expect(all.body).toEqual({
      total: published.length,
      offset: 0,
      limit: 1000,
      events: published,
    });

    const pid1 = await http.get('/events').query({ pid: 1, offset: 1, limit: 2 }).expect(200);
    expect(pid1.body).toEqual({ total: 6, offset: 1, limit: 2, events: published.slice(1, 3) });

    const accesses = await http.get('/events?kind=access&instance=cpu0').expect(200);
    expect((accesses.body as { events: TraceEvent[] }).events.map((e) => e.id)).toEqual([
      'cpu0:1',
      'cpu0:2',
      'cpu0:3',
    ]);

    const byOp = await http.get('/events').query({ op: 'mm-0/create#1' }).expect(200);
    expect(byOp.body).toMatchObject({ total: 1, events: [published[0]] });

    const range = await http
      .get('/events')
      .query({ kind: 'process.create,vma.map', from: 1_000_001, to: 1_000_008 })
      .expect(200);
    expect((range.body as { events: TraceEvent[] }).events).toEqual([published[1], published[6]]);
  });

  it('counts stored, rejected and dropped events, by kind', async () => {
    const stats = await http.get('/stats').expect(200);
    expect(stats.body).toMatchObject({
      events: 8,
      rejected: 2,
      dropped: 0,
      byKind: { access: 3, 'process.create': 2, 'ptl.acquire': 1, 'ptl.release': 1, 'vma.map': 1 },
    });
    const reasons = (stats.body as { lastRejected: string[] }).lastRejected;
    expect(reasons).toHaveLength(2);
    expect(reasons[0]).toBe('mmlab.trace.mm.mm-0: not JSON');
    expect(reasons[1]).toMatch(/^mmlab\.trace\.cpu\.cpu0: /);
  });

  it('runs the checker over the store and finds the planted stale access', async () => {
    const res = await http.get('/invariants').expect(200);
    const body = res.body as {
      events: number;
      softlockupMs: number;
      verdicts: Array<InvariantVerdict & { violationCount: number }>;
    };
    expect(body.softlockupMs).toBe(50);
    expect(body.verdicts.map((v) => [v.name, v.ok, v.checked])).toEqual([
      ['no-sleep-under-ptlock', true, 0],
      ['paired-range', true, 0],
      ['teardown-before-free', true, 0],
      ['no-stale-access', false, 3],
      ['no-map-during-invalidate', true, 0],
      ['coherent-reads', true, 2],
      ['fenced-writes', true, 0],
      ['bounded-ptlock-hold', true, 1],
    ]);
    const nsa = body.verdicts.find((v) => v.name === 'no-stale-access')!;
    expect(nsa.violationCount).toBe(1);
    expect(nsa.violations[0].events).toEqual([stale]);

    // A threshold below the 1 ms hold makes bounded-ptlock-hold fail.
    const strict = await http
      .get('/invariants')
      .query({ softlockupMs: 0.5, maxViolations: 0 })
      .expect(200);
    const bph = (strict.body as typeof body).verdicts.find(
      (v) => v.name === 'bounded-ptlock-hold',
    )!;
    expect([bph.ok, bph.violationCount, bph.violations]).toEqual([false, 1, []]);
  });

  it('answers a bad query with 400 and a typed error', async () => {
    for (const q of [
      '/events?limit=100001',
      '/events?pid=abc',
      '/events?kind=nope',
      '/events?pids=1',
      '/invariants?softlockupMs=-1',
    ]) {
      const res = await http.get(q).expect(400);
      expect(res.body).toMatchObject({ code: 'EBADMSG', definite: true });
      expect((res.body as { message: string }).message).toMatch(/^bad query: /);
    }
    await http.get('/no-such-route').expect(404); // HTTP errors are not swallowed by the RPC filter
  });

  it('exports the violations its checker finds and its intake counters on /metrics', async () => {
    const res = await http.get('/metrics').expect(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    const value = (series: string) => {
      const line = res.text.split('\n').find((l) => l.startsWith(`${series} `));
      return line === undefined ? undefined : Number(line.slice(series.length + 1));
    };
    expect(value('mmlab_violations_total{invariant="no-stale-access"}')).toBe(1);
    expect(value('mmlab_violations_total{invariant="paired-range"}')).toBe(0);
    expect(value('mmlab_observer_events_stored_total')).toBe(8);
    expect(value('mmlab_observer_events_rejected_total')).toBe(2);
    expect(value('mmlab_observer_events_dropped_total')).toBe(0);
    expect(value('mmlab_observer_store_events')).toBe(8);
    // a second scrape of the same store adds nothing
    const again = (await http.get('/metrics').expect(200)).text;
    expect(again).toContain('mmlab_violations_total{invariant="no-stale-access"} 1\n');
  });

  it('is healthy while connected to NATS (Terminus; the observer has no Redis to check)', async () => {
    expect((await http.get('/health').expect(200)).body).toEqual({
      status: 'ok',
      info: { nats: { status: 'up', state: 'connected' } },
      error: {},
      details: { nats: { status: 'up', state: 'connected' } },
    });
  });

  it('refuses a cross-site form post to /reset (415) and a JSON one without the token (401): nothing is wiped', async () => {
    // what <form method=post action=http://127.0.0.1:8080/reset> on another site sends
    const form = await http
      .post('/reset')
      .set('origin', 'https://evil.example')
      .type('form')
      .send('a=1');
    expect([form.status, (form.body as { code: string }).code]).toEqual([415, 'EBADMSG']);
    const text = await http
      .post('/reset')
      .set('origin', 'https://evil.example')
      .set('content-type', 'text/plain')
      .send('{}');
    expect(text.status).toBe(415);
    const bare = await http.post('/reset');
    expect(bare.status).toBe(415);
    const noToken = await http.post('/reset').send({});
    expect([noToken.status, (noToken.body as { code: string }).code]).toEqual([401, 'EACCES']);
    const wrong = await http
      .post('/reset')
      .set('authorization', `Bearer ${newLabToken()}`)
      .send({});
    expect(wrong.status).toBe(401);
    expect((await http.get('/stats').expect(200)).body).toMatchObject({ events: 8 });
    // no CORS anywhere: a preflight from another origin gets no permission
    const pre = await http
      .options('/reset')
      .set('origin', 'https://evil.example')
      .set('access-control-request-method', 'POST')
      .set('access-control-request-headers', 'authorization,content-type');
    expect(pre.headers['access-control-allow-origin']).toBeUndefined();
  });

  it("answers requests to this machine's names only (a rebound name is refused), reads included", async () => {
    for (const path of ['/', '/stats', '/events']) {
      const r = await http.get(path).set('host', 'evil.example:8080');
      expect([r.status, (r.body as { code: string }).code], path).toEqual([403, 'EACCES']);
    }
    expect((await http.get('/stats').set('host', 'localhost:8080')).status).toBe(200);
  });

  it('resets the store and the counters (JSON, with the token)', async () => {
    const reset = await http.post('/reset').set('authorization', `Bearer ${TOKEN}`).send({});
    expect([reset.status, reset.body]).toEqual([200, { cleared: 8 }]);
    expect((await http.get('/stats').expect(200)).body).toMatchObject({
      events: 0,
      rejected: 0,
      dropped: 0,
      byKind: {},
    });
    const e = mm.emit({ kind: 'barrier', tag: 'after-reset' });
    await mm.flush();
    expect(await rpc.call('observerSync', {})).toEqual({ events: 1 });
    expect((await http.get('/events').expect(200)).body).toMatchObject({ total: 1, events: [e] });
  });

  it('asks every tracer to replay when a batch skips seqs, and drops the copies', async () => {
    // true once the observer asks; false after 10 s (a hang guard, not a timing assertion)
    const replayAsked = new Promise<boolean>((resolve) => {
      const sub = nc.subscribe(TRACE_REPLAY_SUBJECT, {
        callback: () => {
          sub.unsubscribe();
          resolve(true);
        },
      });
      setTimeout(() => resolve(false), 10_000).unref();
    });
    await nc.flush();
    // mm-0 sent seqs 1..6; a batch of seq 9 says 7 and 8 were lost on the way
    const e9 = { ...published[0], id: 'mm-0:9', ts: 1_000_020, op: undefined };
    nc.publish(
      traceSubject('mm', 'mm-0'),
      JSON.stringify({ instance: 'mm-0', first: 9, last: 9, events: [e9] }),
    );
    // the observer's request (mm's tracer, on nc, replays its 6 events)
    expect(await replayAsked).toBe(true);
    await mm.flush();
    expect(await rpc.call('observerSync', {})).toEqual({ events: 2 });
    const ids = ((await http.get('/events').expect(200)).body as { events: TraceEvent[] }).events;
    expect(ids.map((e) => e.id)).toEqual(['mm-0:6', 'mm-0:9']);
  });

  it('reports 503 when NATS goes away, and writes the whole trace to its file on close', async () => {
    await nats.stop();
    const deadline = Date.now() + 10_000;
    let res = await http.get('/health');
    while (Date.now() < deadline && res.status !== 503) {
      await sleep(50);
      res = await http.get('/health');
    }
    expect(res.status).toBe(503);
    expect(res.body).toMatchObject({
      status: 'error',
      error: { nats: { status: 'down', state: 'disconnected' } },
    });
    const intake = app.get(TraceIntake);
    await app.close();
    expect(intake.nc.isClosed()).toBe(true); // the intake's shutdown hook ran
    const ids = readFileSync(traceFile, 'utf8')
      .trimEnd()
      .split('\n')
      .map((l) => (JSON.parse(l) as TraceEvent).id);
    expect(ids).toEqual([...published.map((e) => e.id), 'mm-0:6', 'mm-0:9']);
  });
});
