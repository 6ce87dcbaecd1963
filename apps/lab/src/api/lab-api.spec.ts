/**
 * The lab API's HTTP mapping, through supertest on the in-process Nest app. The nemesis is a
 * real one on a real lab (nats-server, redis-server, mm, a CPU, hca0 as processes: the built
 * dist/, so build first) — once with the LocalLab (as `mmlab up` serves it), once without
 * (as `mmlab api` does). A stub nemesis only where the test is about mapping an error the lab
 * cannot be made to produce on demand.
 */
import { readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { INestApplication } from '@nestjs/common';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MmlabError } from '@mmlab/protocol';
import { RpcClient, newLabToken } from '@mmlab/runtime';
import { type TestLab, startTestLab, until } from '@mmlab/testing';
import { type FaultWindow, Nemesis } from '../nemesis';
import type { NemesisApi } from './chaos.controller';
import { createLabApi, natsLinkOf } from './lab-api';
import { LabTargets } from './targets';

/** Every field the tests read of an answer. */
interface Body {
  code: string;
  message: string;
  active: FaultWindow[];
  windows: FaultWindow[];
  targets: string[];
  pids: Record<string, number>;
  id: number;
}
const b = (r: { body: unknown }): Body => r.body as Body;

/** The lab's token, as `mmlab up` would generate it. */
const TOKEN = newLabToken();

/** The state letter of /proc/<pid>/stat ("pid (comm) S ..."; comm may hold spaces). */
const stateOf = (pid: number): string => {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
};

describe('lab API on a real lab', () => {
  let t: TestLab;
  let local: { app: INestApplication; nemesis: Nemesis };
  let remote: { app: INestApplication; nemesis: Nemesis };

  beforeAll(async () => {
    t = await startTestLab(
      {
        mode: 'patched',
        frames: 32,
        cpus: 1,
        mmReplicas: 1,
        subscribers: [{ name: 'hca0', kind: 'hca' }],
      },
      { trace: false },
    );
    const make = async (lab: typeof t.lab | null, timeoutMs?: number) => {
      const rpc = new RpcClient(t.nc);
      const nemesis = new Nemesis(lab, rpc, { timeoutMs });
      const app = await createLabApi(
        { nemesis, targets: new LabTargets(lab, rpc), nats: natsLinkOf(t.nc), token: TOKEN },
        { logger: false },
      );
      return { app, nemesis };
    };
    local = await make(t.lab, 2000);
    remote = await make(null, 500);
  }, 120_000);
  afterAll(async () => {
    await local?.nemesis.heal();
    await remote?.nemesis.heal();
    await local?.app.close();
    await remote?.app.close();
    await t?.stop();
  });

  const http = (a: { app: INestApplication }) => request(a.app.getHttpServer() as Server);
  /** A POST as the lab's own clients send it: with the token. */
  const post = (a: { app: INestApplication }, route: string) =>
    http(a).post(route).set('authorization', `Bearer ${TOKEN}`);

  it("a bad spec is 400 EBADMSG with zod's message, and opens nothing", async () => {
    for (const body of [
      { target: 'hca0', fault: 'latency' },
      { target: 'hca0', fault: 'drop-ack', distribution: 5 },
      { target: 'hca0', fault: 'explode' },
      { target: 'hca0', fault: 'pause', ms: -1 },
      { target: 'hca0', fault: 'hang', colour: 'red' },
      { target: 'bad name!', fault: 'kill' },
    ]) {
      const r = await post(local, '/chaos').send(body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(b(r).code).toBe('EBADMSG');
      expect(b(r).message).toMatch(/^bad fault spec: /);
    }
    const latency = await post(local, '/chaos').send({ target: 'hca0', fault: 'latency' });
    expect(b(latency).message).toContain('distribution: a latency fault needs a distribution');
    const notJson = await post(local, '/chaos')
      .set('content-type', 'application/json')
      .send('{bad');
    expect(notJson.status).toBe(400);
    expect(b(notJson).code).toBe('EBADMSG');
    expect((await http(local).get('/chaos')).body).toEqual({ active: [], windows: [] });
  });

  it('an unknown target is 404 naming the targets; a callback fault on a non-subscriber too', async () => {
    const r = await post(local, '/chaos').send({ target: 'nosuch', fault: 'kill' });
    expect(r.status).toBe(404);
    expect(b(r).code).toBe('EINVAL');
    for (const name of ['cpu0', 'mm-0', 'hca0', 'nats', 'redis'])
      expect(b(r).message).toContain(name);
    const cb = await post(local, '/chaos').send({ target: 'cpu0', fault: 'drop-ack' });
    expect(cb.status).toBe(404);
    expect(b(cb).message).toContain('not a subscriber');
    const viaPing = await post(remote, '/chaos').send({ target: 'cpu0', fault: 'dup-ack' });
    expect(viaPing.status).toBe(404);
    expect(b(viaPing).message).toContain('hca0');
  });

  it('pause → 201 and the process is stopped; again → 409; heal → it runs; the window is closed', async () => {
    const pid = t.lab.proc('cpu0').pid!;
    const r = await post(local, '/chaos').send({ target: 'cpu0', fault: 'pause' });
    expect(r.status).toBe(201);
    expect(r.body).toMatchObject({
      target: 'cpu0',
      instance: 'cpu0',
      fault: 'pause',
      endedAt: null,
    });
    // SIGSTOP lands asynchronously: wait for it (a hang guard, not a timing assertion)
    await until(() => stateOf(pid) === 'T', 'cpu0 stopped');
    const again = await post(local, '/chaos').send({ target: 'cpu0', fault: 'kill' });
    expect(again.status).toBe(409);
    expect(b(again).code).toBe('EINVAL');
    expect(b(again).message).toContain('heal it first');
    const s = await http(local).get('/chaos');
    expect(b(s).active.map((w: { id: number }) => w.id)).toEqual([b(r).id]);
    const healed = await post(local, '/heal').send({ target: 'cpu0' });
    expect(healed.status).toBe(200);
    expect(healed.body).toEqual({ healed: 1 });
    await until(() => stateOf(pid) !== 'T', 'cpu0 running');
    const after = await http(local).get('/chaos');
    expect(b(after).active).toEqual([]);
    expect(b(after).windows.map((w) => [w.id, typeof w.endedAt])).toEqual([[b(r).id, 'number']]);
  });

  it('GET /targets lists the local lab with pids, or the instances answering ping', async () => {
    const l = await http(local).get('/targets');
    expect(l.status).toBe(200);
    expect(l.body).toMatchObject({ local: true, subscribers: ['hca0'] });
    expect(b(l).targets).toEqual(
      expect.arrayContaining(['mm', 'mm-0', 'cpu0', 'hca0', 'nats', 'redis']),
    );
    expect(b(l).pids.cpu0).toBe(t.lab.proc('cpu0').pid);
    const r = await http(remote).get('/targets');
    expect(r.body).toMatchObject({ local: false, subscribers: ['hca0'], processes: [], pids: {} });
    expect(b(r).targets).toEqual(
      expect.arrayContaining(['mm', 'mm-0', 'cpu0', 'hca0', 'observer']),
    );
  });

  it('without a local lab a process fault is 422 pointing at docker compose', async () => {
    const r = await post(remote, '/chaos').send({ target: 'cpu0', fault: 'pause' });
    expect(r.status).toBe(422);
    expect(b(r).code).toBe('EINVAL');
    expect(b(r).message).toContain('docker compose');
    expect(b(await http(remote).get('/chaos')).active).toEqual([]);
  });

  it('a subscriber that does not answer its chaos subject in time is 504 ETIMEDOUT', async () => {
    t.lab.signal('hca0', 'SIGSTOP');
    try {
      const r = await post(local, '/chaos').send({ target: 'hca0', fault: 'hang' });
      expect(r.status).toBe(504);
      expect(b(r).code).toBe('ETIMEDOUT');
      expect(b(r).message).toContain('mmlab.sub.hca0.chaos');
      // not injected: recorded as a closed window that says so
      const w = b(await http(local).get('/chaos')).windows.at(-1);
      expect([w?.fault, typeof w?.endedAt]).toEqual(['hang', 'number']);
      expect(w?.healError).toContain('not injected');
    } finally {
      t.lab.signal('hca0', 'SIGCONT');
    }
    // hca0 got the request late and may hold the hang: an empty list puts it right
    await local.nemesis.heal('hca0');
    await new RpcClient(t.nc).call('subChaos', { faults: [] }, { id: 'hca0' });
  });

  it('a callback fault through the API: 201, listed, healed by POST /heal {}', async () => {
    const r = await post(remote, '/chaos').send({ target: 'hca0', fault: 'drop-ack' });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(b(await http(remote).get('/chaos')).active).toHaveLength(1);
    expect((await post(remote, '/heal').send({})).body).toEqual({ healed: 1 });
    expect(b(await http(remote).get('/chaos')).active).toEqual([]);
    expect((await http(remote).get('/health')).body).toEqual({
      status: 'ok',
      nats: 'connected',
      active: 0,
    });
  });

  describe('a web page cannot drive it', () => {
    /** cpu0's process is the one the lab started, and it runs (not killed, not stopped). */
    const cpu0Runs = (pid: number) => {
      const p = t.lab.proc('cpu0');
      expect([p.pid, p.exitCode, p.signalCode]).toEqual([pid, null, null]);
      expect(['R', 'S', 'D']).toContain(stateOf(pid));
    };

    it('a cross-site HTML form (urlencoded, text/plain) is 415 and kills nothing', async () => {
      const pid = t.lab.proc('cpu0').pid!;
      const before = b(await http(local).get('/chaos')).windows.length;
      // what <form method=post action=http://127.0.0.1:8081/chaos> on another site sends
      const form = await http(local)
        .post('/chaos')
        .set('origin', 'https://evil.example')
        .type('form')
        .send('target=cpu0&fault=kill');
      expect(form.status).toBe(415);
      expect(b(form).code).toBe('EBADMSG');
      expect(b(form).message).toContain('application/json');
      // fetch(..., {mode: 'no-cors'}) with a JSON text as text/plain: no preflight either
      const text = await http(local)
        .post('/chaos')
        .set('origin', 'https://evil.example')
        .set('content-type', 'text/plain')
        .send(JSON.stringify({ target: 'cpu0', fault: 'pause' }));
      expect(text.status).toBe(415);
      // even with the token, a form is refused (the body's type is the first line)
      const withToken = await post(local, '/chaos').type('form').send('target=cpu0&fault=kill');
      expect(withToken.status).toBe(415);
      cpu0Runs(pid);
      expect(b(await http(local).get('/chaos')).windows).toHaveLength(before);
    });

    it('JSON without the token, or with another one, is 401 EACCES and changes nothing', async () => {
      const pid = t.lab.proc('cpu0').pid!;
      const before = b(await http(local).get('/chaos')).windows.length;
      const none = await http(local).post('/chaos').send({ target: 'cpu0', fault: 'kill' });
      expect(none.status).toBe(401);
      expect(b(none).code).toBe('EACCES');
      expect(b(none).message).toContain('Authorization: Bearer');
      const wrong = await http(local)
        .post('/chaos')
        .set('authorization', `Bearer ${newLabToken()}`)
        .send({ target: 'cpu0', fault: 'pause' });
      expect([wrong.status, b(wrong).code]).toEqual([401, 'EACCES']);
      cpu0Runs(pid);
      expect(b(await http(local).get('/chaos')).windows).toHaveLength(before);
    });

    it('POST /heal heals only with JSON and the token', async () => {
      const opened = await post(local, '/chaos').send({ target: 'hca0', fault: 'dup-ack' });
      expect(opened.status, JSON.stringify(opened.body)).toBe(201);
      try {
        const anyBody = await http(local).post('/heal').type('form').send('x=1');
        expect(anyBody.status).toBe(415);
        const bare = await http(local).post('/heal');
        expect(bare.status).toBe(415);
        const noToken = await http(local).post('/heal').send({});
        expect(noToken.status).toBe(401);
        expect(b(await http(local).get('/chaos')).active.map((w) => w.id)).toEqual([b(opened).id]);
        // the lab's own client: JSON, the token in either header
        const healed = await http(local)
          .post('/heal')
          .set('x-mmlab-token', TOKEN)
          .send({ target: 'hca0' });
        expect([healed.status, healed.body]).toEqual([200, { healed: 1 }]);
      } finally {
        await local.nemesis.heal('hca0');
      }
    });

    it('answers no CORS preflight: a page of another origin cannot send the token', async () => {
      const pre = await http(local)
        .options('/chaos')
        .set('origin', 'https://evil.example')
        .set('access-control-request-method', 'POST')
        .set('access-control-request-headers', 'authorization,content-type');
      expect(pre.headers['access-control-allow-origin']).toBeUndefined();
      expect(pre.headers['access-control-allow-headers']).toBeUndefined();
    });
  });
});

describe('lab API: mapping of errors the lab cannot be made to produce on demand', () => {
  let app: INestApplication;
  let next: MmlabError;
  const stub: NemesisApi = {
    windows: () => [],
    active: () => [],
    inject: () => Promise.reject(next),
    heal: () => Promise.resolve(0),
  };
  beforeAll(async () => {
    app = await createLabApi(
      {
        nemesis: stub,
        targets: {
          list: () => Promise.reject(new Error('unused')),
          problem: () => Promise.resolve(undefined),
        },
        nats: () => ({ up: false, state: 'disconnected' }),
        token: TOKEN,
      },
      { logger: false },
    );
  });
  afterAll(() => app?.close());

  it.each([
    ['ESRCH', 'no mm replica answers ping', 404],
    ['ENOHANDLER', 'nobody serves mmlab.sub.hca9.chaos', 404],
    ['ETIMEDOUT', 'no reply on mmlab.sub.hca0.chaos', 504],
    ['EINTERNAL', 'a bug', 500],
  ] as const)('%s (%s) → %i', async (code, message, status) => {
    next = new MmlabError(code, message);
    const r = await request(app.getHttpServer() as Server)
      .post('/chaos')
      .set('x-mmlab-token', TOKEN)
      .send({ target: 'hca0', fault: 'hang' });
    expect(r.status).toBe(status);
    expect(r.body).toEqual({ code, message });
  });

  it('an unknown route is 404 ENOHANDLER; /health is 503 without NATS', async () => {
    const r = await request(app.getHttpServer() as Server).get('/nope');
    expect(r.status).toBe(404);
    expect(b(r).code).toBe('ENOHANDLER');
    const h = await request(app.getHttpServer() as Server).get('/health');
    expect(h.status).toBe(503);
    expect(h.body).toMatchObject({ status: 'down', nats: 'disconnected' });
  });

  it('a lab started without a token refuses every change, 403 EACCES saying how to set one', async () => {
    const tokenless = await createLabApi(
      {
        nemesis: stub,
        targets: {
          list: () => Promise.resolve(null as never),
          problem: () => Promise.resolve(undefined),
        },
        nats: () => ({ up: true, state: 'connected' }),
        token: undefined,
      },
      { logger: false },
    );
    try {
      const r = await request(tokenless.getHttpServer() as Server)
        .post('/heal')
        .set('authorization', `Bearer ${TOKEN}`)
        .send({});
      expect(r.status).toBe(403);
      expect(b(r).code).toBe('EACCES');
      expect(b(r).message).toContain('MMLAB_LAB_TOKEN');
      // reading stays open
      expect((await request(tokenless.getHttpServer() as Server).get('/chaos')).status).toBe(200);
    } finally {
      await tokenless.close();
    }
  });

  it('POST /heal with a bad target is 400', async () => {
    const r = await request(app.getHttpServer() as Server)
      .post('/heal')
      .set('x-mmlab-token', TOKEN)
      .send({ target: 'a b' });
    expect(r.status).toBe(400);
    expect(b(r).code).toBe('EBADMSG');
  });
});
