/**
 * GET /stream, the dashboard's files and the OpenAPI document, on an in-process HTTP server
 * (no NATS needed: the store is fed directly), and SseClient's backpressure on a fake socket.
 */
import { EventEmitter } from 'node:events';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { INestApplication } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TraceEvent } from '@mmlab/protocol';
import { LabTokenGuard, newLabToken } from '@mmlab/runtime';
import { DashboardController, findDashboardDir, withLabToken } from './dashboard.controller';
import { EventsController } from './events.controller';
import { OBSERVER_SETTINGS } from './observer.config';
import { setupOpenApi } from './openapi';
import { StreamController, replayOf } from './stream.controller';
import { TraceIntake } from './trace-intake';
import { TraceStore } from './trace-store';
import { SseClient, type SseSink, StreamingTraceStore } from './trace-stream';

const ev = (n: number, ts = 1000 + n): TraceEvent => ({
  id: `cpu0:${n}`,
  ts,
  service: 'cpu',
  instance: 'cpu0',
  kind: 'barrier',
  tag: `t${n}`,
});

/** The lab's token, as the observer of a lab has it (MMLAB_LAB_TOKEN). */
const TOKEN = newLabToken();

interface SseMessage {
  event: string;
  data: string;
  id?: string;
}

function parseSse(text: string): SseMessage[] {
  return text
    .split('\n\n')
    .filter((block) => block.trim() !== '' && !block.startsWith(':'))
    .map((block) => {
      const m: SseMessage = { event: 'message', data: '' };
      for (const line of block.split('\n')) {
        const i = line.indexOf(': ');
        const [k, v] = i < 0 ? [line, ''] : [line.slice(0, i), line.slice(i + 2)];
        if (k === 'event') m.event = v;
        else if (k === 'data') m.data += v;
        else if (k === 'id') m.id = v;
      }
      return m;
    })
    .filter((m) => m.event !== 'message' || m.data !== '');
}

const eventsIn = (ms: SseMessage[]): string[] =>
  ms
    .filter((m) => m.event === 'events')
    .flatMap((m) => (JSON.parse(m.data) as TraceEvent[]).map((e) => e.id));

/** A socket that takes `room` bytes, then reports full until drain(). */
class FakeSink extends EventEmitter implements SseSink {
  chunks: string[] = [];
  writableEnded = false;
  private used = 0;
  constructor(private room: number) {
    super();
  }
  write(chunk: unknown): boolean {
    const s = String(chunk);
    this.chunks.push(s);
    this.used += s.length;
    return this.used < this.room;
  }
  end(): void {
    this.writableEnded = true;
  }
  drain(room: number): void {
    this.used = 0;
    this.room = room;
    this.emit('drain');
  }
  get text(): string {
    return this.chunks.join('');
  }
}

const tick = (ms = 40) => new Promise((r) => setTimeout(r, ms));

describe('SseClient', () => {
  const opts = { maxQueue: 100, batch: 10, flushMs: 1, heartbeatMs: 60_000 };

  it('writes hello, the replay in batches, replayed, then live events', async () => {
    const sink = new FakeSink(1e9);
    const c = new SseClient(sink, [ev(1), ev(2), ev(3)], opts, () => undefined, { stored: 3 });
    c.event(ev(4));
    await tick();
    c.event(ev(5));
    await tick();
    const ms = parseSse(sink.text);
    expect(ms[0]).toMatchObject({ event: 'hello', data: JSON.stringify({ stored: 3, replay: 3 }) });
    expect(ms.map((m) => m.event)).toEqual(['hello', 'events', 'replayed', 'events', 'events']);
    expect(eventsIn(ms)).toEqual(['cpu0:1', 'cpu0:2', 'cpu0:3', 'cpu0:4', 'cpu0:5']);
    expect(ms[1].id).toBe('1003');
    expect(sink.text.startsWith('retry: 2000\n')).toBe(true);
    c.close();
    expect(sink.writableEnded).toBe(true);
  });

  it('stops writing while the socket is full and goes on at drain', async () => {
    const sink = new FakeSink(200);
    const replay = Array.from({ length: 35 }, (_, i) => ev(i));
    const c = new SseClient(sink, replay, opts, () => undefined);
    await tick();
    const before = eventsIn(parseSse(sink.text)).length;
    expect(before).toBeLessThan(35); // the first batch filled the socket
    expect(c.backlog).toBe(35 - before);
    sink.drain(1e9);
    await tick();
    expect(eventsIn(parseSse(sink.text))).toEqual(replay.map((e) => e.id));
    c.close();
  });

  it('a client that does not read is told it lagged and cut off, not buffered without bound', async () => {
    const sink = new FakeSink(100);
    let closed = false;
    const c = new SseClient(sink, [], opts, () => (closed = true));
    await tick();
    for (let i = 0; i < 500; i++) c.event(ev(i));
    expect(closed).toBe(true);
    expect(c.closed).toBe(true);
    const lagged = parseSse(sink.text).find((m) => m.event === 'lagged');
    expect(JSON.parse(lagged!.data)).toMatchObject({ message: 'lagged, reload', dropped: 101 });
    expect(sink.writableEnded).toBe(true);
    c.event(ev(1000)); // ignored once closed
    expect(c.backlog).toBe(0);
  });

  it('a reset empties what is pending and tells the client', async () => {
    const sink = new FakeSink(1e9);
    const c = new SseClient(sink, [], opts, () => undefined);
    c.event(ev(1));
    c.reset();
    await tick();
    expect(parseSse(sink.text).map((m) => m.event)).toEqual(['hello', 'reset']);
    c.close();
  });
});

describe('replayOf', () => {
  const stored = [ev(1, 10), ev(2, 30), ev(3, 20), ev(4, 40)];
  it('keeps arrival order, from is inclusive, tail keeps the last ones', () => {
    expect(replayOf(stored, 20).map((e) => e.id)).toEqual(['cpu0:2', 'cpu0:3', 'cpu0:4']);
    expect(replayOf(stored, 0, 2).map((e) => e.id)).toEqual(['cpu0:3', 'cpu0:4']);
    expect(replayOf(stored, 99)).toEqual([]);
  });
});

describe('the observer over HTTP: /stream, the dashboard, /api', () => {
  let app: INestApplication;
  let base: string;
  const store = new StreamingTraceStore(1000);
  const dist = mkdtempSync(path.join(tmpdir(), 'mmlab-dashboard-'));
  const prevDir = process.env.MMLAB_DASHBOARD_DIR;

  beforeAll(async () => {
    mkdirSync(path.join(dist, 'assets'));
    writeFileSync(
      path.join(dist, 'index.html'),
      '<!doctype html><script src="./assets/app-1.js"></script>',
    );
    writeFileSync(path.join(dist, 'assets', 'app-1.js'), 'console.log(1)');
    process.env.MMLAB_DASHBOARD_DIR = dist;
    const intake = { reset: () => store.clear(), rejected: 0, lastRejected: [], file: null };
    const mod = await Test.createTestingModule({
      controllers: [EventsController, StreamController, DashboardController],
      providers: [
        { provide: TraceStore, useValue: store },
        { provide: TraceIntake, useValue: intake },
        { provide: OBSERVER_SETTINGS, useValue: { softlockupMs: 1000, labToken: TOKEN } },
      ],
    }).compile();
    app = mod.createNestApplication({ logger: false });
    app.useGlobalGuards(new LabTokenGuard(TOKEN, '127.0.0.1'));
    setupOpenApi(app);
    await app.listen(0, '127.0.0.1');
    const { port } = (app.getHttpServer() as http.Server).address() as AddressInfo;
    base = `http://127.0.0.1:${port}`;
  });

  afterAll(async () => {
    await app?.close();
    if (prevDir === undefined) delete process.env.MMLAB_DASHBOARD_DIR;
    else process.env.MMLAB_DASHBOARD_DIR = prevDir;
  });

  /** Open GET path, collect its body until `until` holds, then hang up. */
  function readStream(
    url: string,
    until: (ms: SseMessage[]) => boolean,
    headers: http.OutgoingHttpHeaders = {},
  ): Promise<{ status: number; type: string; messages: SseMessage[] }> {
    return new Promise((resolve, reject) => {
      const req = http.get(base + url, { headers }, (res) => {
        let text = '';
        const check = () => {
          const ms = parseSse(text);
          if (until(ms) || res.statusCode !== 200) {
            req.destroy();
            resolve({
              status: res.statusCode!,
              type: String(res.headers['content-type']),
              messages: ms,
            });
          }
        };
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          text += d;
          check();
        });
        res.on('end', check);
      });
      req.on('error', reject);
    });
  }

  it('replays stored events from a ts, then streams new ones as they are stored', async () => {
    store.clear();
    for (let i = 1; i <= 5; i++) store.add(ev(i));
    const got = readStream('/stream?from=1003', (ms) => eventsIn(ms).length >= 5);
    setTimeout(() => {
      store.add(ev(6));
      store.add(ev(7));
    }, 100);
    const r = await got;
    expect(r.status).toBe(200);
    expect(r.type).toMatch(/^text\/event-stream/);
    expect(JSON.parse(r.messages[0].data)).toEqual({ stored: 5, from: 1003, replay: 3 });
    expect(eventsIn(r.messages)).toEqual(['cpu0:3', 'cpu0:4', 'cpu0:5', 'cpu0:6', 'cpu0:7']);
  });

  it('without from: live only; tail and Last-Event-ID pick the replay', async () => {
    store.clear();
    for (let i = 1; i <= 5; i++) store.add(ev(i));
    const live = readStream('/stream', (ms) => eventsIn(ms).length >= 1);
    setTimeout(() => store.add(ev(6)), 100);
    expect(eventsIn((await live).messages)).toEqual(['cpu0:6']);
    const tail = await readStream('/stream?from=0&tail=2', (ms) =>
      ms.some((m) => m.event === 'replayed'),
    );
    expect(eventsIn(tail.messages)).toEqual(['cpu0:5', 'cpu0:6']);
    const resumed = await readStream(
      '/stream?from=0',
      (ms) => ms.some((m) => m.event === 'replayed'),
      {
        'Last-Event-ID': '1005',
      },
    );
    expect(eventsIn(resumed.messages)).toEqual(['cpu0:5', 'cpu0:6']);
  });

  it('tells streams about POST /reset', async () => {
    const got = readStream('/stream', (ms) => ms.some((m) => m.event === 'reset'));
    setTimeout(
      () =>
        void fetch(base + '/reset', {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` },
          body: '{}',
        }),
      100,
    );
    expect((await got).messages.map((m) => m.event)).toEqual(['hello', 'reset']);
  });

  it('answers a bad query with 400 EBADMSG', async () => {
    const r = await fetch(base + '/stream?from=soon');
    expect(r.status).toBe(400);
    expect(await r.json()).toMatchObject({ code: 'EBADMSG' });
    expect((await fetch(base + '/stream?tail=1&x=2')).status).toBe(400);
  });

  it('serves the dashboard at / and /dashboard, and its assets under both', async () => {
    for (const p of ['/', '/dashboard', '/dashboard/']) {
      const r = await fetch(base + p);
      expect(r.status).toBe(200);
      expect(r.headers.get('content-type')).toBe('text/html; charset=utf-8');
      expect(await r.text()).toContain('./assets/app-1.js');
    }
    for (const p of ['/assets/app-1.js', '/dashboard/assets/app-1.js']) {
      const r = await fetch(base + p);
      expect(r.status).toBe(200);
      expect(r.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
      expect(r.headers.get('cache-control')).toContain('immutable');
    }
    expect((await fetch(base + '/assets/nope.js')).status).toBe(404);
    expect((await fetch(base + '/assets/..%2Findex.html')).status).toBe(404);
  });

  it("the page carries the lab's token for the dashboard (a meta tag), and is never cached", async () => {
    const r = await fetch(base + '/');
    expect(r.headers.get('cache-control')).toBe('no-store');
    expect(await r.text()).toBe(
      `<!doctype html><meta name="mmlab-token" content="${TOKEN}" /><script src="./assets/app-1.js"></script>`,
    );
    expect(withLabToken('<html><head><title>x</title></head></html>', 'a"<b')).toBe(
      '<html><head><title>x</title><meta name="mmlab-token" content="a&quot;&lt;b" /></head></html>',
    );
    expect(withLabToken('<p>no token</p>', undefined)).toBe('<p>no token</p>');
  });

  it('finds the build above the sources or in dist, and nothing else', () => {
    const root = mkdtempSync(path.join(tmpdir(), 'mmlab-root-'));
    mkdirSync(path.join(root, 'apps', 'dashboard'), { recursive: true });
    writeFileSync(path.join(root, 'apps', 'dashboard', 'index.html'), 'sources');
    const src = path.join(root, 'apps', 'observer', 'src');
    mkdirSync(src, { recursive: true });
    expect(findDashboardDir({}, src)).toBeNull(); // the unbuilt sources are not served
    mkdirSync(path.join(root, 'dist', 'dashboard'), { recursive: true });
    writeFileSync(path.join(root, 'dist', 'dashboard', 'index.html'), 'built');
    expect(findDashboardDir({}, src)).toBe(path.join(root, 'dist', 'dashboard'));
    expect(findDashboardDir({}, path.join(root, 'dist', 'apps', 'observer', 'src'))).toBe(
      path.join(root, 'dist', 'dashboard'),
    );
  });

  it('documents every route at /api-json, with Swagger UI at /api', async () => {
    const doc = (await (await fetch(base + '/api-json')).json()) as {
      openapi: string;
      paths: Record<string, Record<string, { parameters?: Array<{ name: string }> }>>;
      components: { schemas: Record<string, unknown> };
    };
    expect(doc.openapi).toMatch(/^3\./);
    expect(Object.keys(doc.paths).sort()).toEqual(
      [
        '/',
        '/assets/{file}',
        '/dashboard',
        '/dashboard/assets/{file}',
        '/events',
        '/reset',
        '/stats',
        '/stream',
      ].sort(),
    );
    expect(doc.paths['/events'].get.parameters?.map((p) => p.name)).toEqual([
      'kind',
      'pid',
      'instance',
      'op',
      'from',
      'to',
      'offset',
      'limit',
    ]);
    expect(doc.paths['/stream'].get.parameters?.map((p) => p.name)).toEqual(
      expect.arrayContaining(['from', 'tail', 'Last-Event-ID']),
    );
    expect(doc.components.schemas.TraceEvent).toBeDefined();
    const ui = await fetch(base + '/api');
    expect(ui.status).toBe(200);
    expect(await ui.text()).toContain('swagger');
  });
});
