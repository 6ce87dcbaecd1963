/**
 * `mmlab chaos` on its own: the command line → ChaosSpec conversion (checked by the same zod
 * schema as the API), the lab URL, the status table, and the exit codes against a plain HTTP
 * server standing in for the API (what it is sent, and what its errors become).
 */
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type ChaosIo,
  DEFAULT_LAB_URL,
  chaosCommand,
  chaosSpecOf,
  chaosStatusCommand,
  healCommand,
  labUrlOf,
  windowTable,
} from './chaos-command';
import type { FaultWindow } from './nemesis';
import { type UpOptions, subscribersSummary, upConfig } from './up-command';

describe('chaosSpecOf', () => {
  const ok = (target: string, fault: string, o = {}) => {
    const r = chaosSpecOf(target, fault, o);
    if (!r.ok) throw new Error(r.message);
    return r.spec;
  };
  const bad = (target: string, fault: string, o = {}) => {
    const r = chaosSpecOf(target, fault, o);
    if (r.ok) throw new Error(`accepted: ${JSON.stringify(r.spec)}`);
    return r.message;
  };

  it('turns numbers into numbers, a distribution into a number or its string, callbacks into a list', () => {
    expect(ok('hca0', 'drop-ack')).toEqual({ target: 'hca0', fault: 'drop-ack' });
    expect(ok('cpu0', 'pause', { ms: '60000' })).toEqual({
      target: 'cpu0',
      fault: 'pause',
      ms: 60000,
    });
    expect(ok('hca0', 'latency', { distribution: '200', jitter: '5' })).toEqual({
      target: 'hca0',
      fault: 'latency',
      distribution: 200,
      jitterMs: 5,
    });
    expect(ok('hca0', 'latency', { distribution: 'pareto:10:1.5' }).distribution).toBe(
      'pareto:10:1.5',
    );
    expect(
      ok('hca0', 'hang', { callbacks: 'invalidate_range_start, invalidate_page' }).callbacks,
    ).toEqual(['invalidate_range_start', 'invalidate_page']);
    expect(ok('mm', 'kill')).toEqual({ target: 'mm', fault: 'kill' });
  });

  it('names the option a mistake is in', () => {
    expect(bad('hca0', 'latency')).toBe('--distribution: a latency fault needs a distribution');
    expect(bad('hca0', 'drop-ack', { distribution: '5' })).toContain(
      '--distribution: distribution belongs to a latency fault, not drop-ack',
    );
    expect(bad('hca0', 'drop-ack', { jitter: '5' })).toContain('--jitter: ');
    expect(bad('cpu0', 'pause', { ms: 'abc' })).toBe('--ms: expected a number, got "abc"');
    expect(bad('cpu0', 'pause', { ms: '0' })).toMatch(/^--ms: /);
    expect(bad('cpu0', 'pause', { ms: '1.5' })).toMatch(/^--ms: /);
    expect(bad('cpu0', 'pause', { callbacks: 'release' })).toMatch(
      /^--callbacks: callbacks belong/,
    );
    expect(bad('hca0', 'hang', { callbacks: 'invalidate_everything' })).toMatch(
      /^--callbacks\[0\]: /,
    );
    expect(bad('hca0', 'latency', { distribution: 'gauss:1:2' })).toMatch(
      /^--distribution: bad latency/,
    );
    expect(bad('hca0', 'explode')).toMatch(/^<fault>: .*drop-ack/);
    expect(bad('bad name', 'kill')).toMatch(/^<target>: expected a target/);
  });
});

describe('labUrlOf', () => {
  it('--lab-url, else MMLAB_LAB_URL, else 127.0.0.1:8081; no trailing slash', () => {
    expect(labUrlOf('http://h:1/', { MMLAB_LAB_URL: 'http://e:2' })).toBe('http://h:1');
    expect(labUrlOf(undefined, { MMLAB_LAB_URL: 'http://e:2' })).toBe('http://e:2');
    expect(labUrlOf(undefined, {})).toBe(DEFAULT_LAB_URL);
    expect(DEFAULT_LAB_URL).toBe('http://127.0.0.1:8081');
  });
});

const win = (id: number, over: Partial<FaultWindow> = {}): FaultWindow => ({
  id,
  target: 'hca0',
  instance: 'hca0',
  fault: 'drop-ack',
  spec: { target: 'hca0', fault: 'drop-ack' },
  label: 'drop-ack hca0',
  startedAt: Date.UTC(2026, 0, 1, 10, 0, 0),
  endedAt: null,
  ...over,
});

describe('windowTable', () => {
  it('one row per window in id order, active ones marked, with how long each lasted', () => {
    const start = Date.UTC(2026, 0, 1, 10, 0, 0);
    const healed = win(1, {
      fault: 'pause',
      instance: 'cpu0',
      label: 'pause cpu0',
      endedAt: start + 1500,
    });
    const open = win(2);
    const lines = windowTable({ active: [open], windows: [open, healed] }, start + 4000);
    expect(lines[0]).toBe('1 active fault window(s), 2 in all');
    expect(lines[1].split(/\s+/)).toEqual([
      'ID',
      'STATE',
      'INSTANCE',
      'FAULT',
      'STARTED',
      'LASTED',
      'WHAT',
    ]);
    expect(lines[2]).toMatch(/^#1 +healed +cpu0 +pause +10:00:00\.000 +1\.5 s +pause cpu0$/);
    expect(lines[3]).toMatch(/^#2 +ACTIVE +hca0 +drop-ack +10:00:00\.000 +4\.0 s +drop-ack hca0$/);
    expect(windowTable({ active: [], windows: [] })).toEqual([
      '0 active fault window(s), 0 in all',
    ]);
  });
});

describe('the commands against an HTTP server', () => {
  let server: Server;
  let url: string;
  const seen: Array<{ method: string; url: string; body: string }> = [];
  let reply: { status: number; body: unknown } = { status: 200, body: {} };

  beforeAll(async () => {
    server = createServer((req: IncomingMessage, res: ServerResponse) => {
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString()));
      req.on('end', () => {
        seen.push({ method: req.method ?? '', url: req.url ?? '', body });
        res.writeHead(reply.status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(reply.body));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  const io = () => {
    const out: string[] = [];
    const err: string[] = [];
    const x: ChaosIo = {
      out: (l) => out.push(l),
      err: (l) => err.push(l),
      env: { MMLAB_LAB_URL: url },
    };
    return { out, err, io: x };
  };

  it('sends the spec and prints the window: exit 0', async () => {
    seen.length = 0;
    reply = { status: 201, body: win(3, { spec: { target: 'hca0', fault: 'drop-ack' } }) };
    const o = io();
    expect(await chaosCommand('hca0', 'drop-ack', {}, o.io)).toBe(0);
    expect(seen).toEqual([
      {
        method: 'POST',
        url: '/chaos',
        body: JSON.stringify({ target: 'hca0', fault: 'drop-ack' }),
      },
    ]);
    expect(o.out).toEqual([
      expect.stringMatching(/^#3 drop-ack hca0: open since .*mmlab heal hca0/),
    ]);
  });

  it('a bad spec: exit 2, the reason, and nothing sent', async () => {
    seen.length = 0;
    const o = io();
    expect(await chaosCommand('hca0', 'latency', {}, o.io)).toBe(2);
    expect(o.err).toEqual(['mmlab chaos: --distribution: a latency fault needs a distribution']);
    expect(seen).toEqual([]);
  });

  it("the API's refusal: exit 2 with its code and message", async () => {
    reply = {
      status: 409,
      body: { code: 'EINVAL', message: 'hca0 already has a drop-ack fault: heal it first' },
    };
    const o = io();
    expect(await chaosCommand('hca0', 'drop-ack', {}, o.io)).toBe(2);
    expect(o.err).toEqual([
      'mmlab: POST /chaos: HTTP 409: EINVAL: hca0 already has a drop-ack fault: heal it first',
    ]);
  });

  it('status --json prints what the API answered; heal sends its target', async () => {
    reply = { status: 200, body: { active: [], windows: [win(1, { endedAt: 5 })] } };
    const o = io();
    expect(await chaosStatusCommand({ json: true }, o.io)).toBe(0);
    expect(JSON.parse(o.out.join('\n'))).toEqual(reply.body);
    seen.length = 0;
    reply = { status: 200, body: { healed: 2 } };
    const h = io();
    expect(await healCommand('cpu0', {}, h.io)).toBe(0);
    expect(seen).toEqual([{ method: 'POST', url: '/heal', body: '{"target":"cpu0"}' }]);
    expect(h.out).toEqual(['healed 2 fault window(s) of cpu0']);
  });

  it('no API listening: exit 2, saying where it looked and how to point elsewhere', async () => {
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const o = io();
    expect(await chaosStatusCommand({ labUrl: `http://127.0.0.1:${port}` }, o.io)).toBe(2);
    expect(o.err[0]).toContain(`cannot reach the lab API at http://127.0.0.1:${port}`);
    expect(o.err[0]).toContain('MMLAB_LAB_URL');
  });
});

describe('mmlab up: the lab it starts to be broken', () => {
  const opts: UpOptions = {
    mode: 'patched',
    frames: '64',
    cpus: '2',
    mmReplicas: '2',
    hca: '2',
    kvm: '0',
    apiPort: '8081',
    logs: '.lab/logs',
  };

  it('--hca n starts subscribers hca0..hca(n-1), with --invalidate-latency on each', () => {
    expect(upConfig(opts).subscribers).toEqual([
      { name: 'hca0', kind: 'hca' },
      { name: 'hca1', kind: 'hca' },
    ]);
    expect(upConfig({ ...opts, hca: '1', invalidateLatency: '250' }).subscribers).toEqual([
      { name: 'hca0', kind: 'hca', invalidateLatencyMs: 250 },
    ]);
    expect(
      upConfig({ ...opts, hca: '1', invalidateLatency: 'normal:5:1' }).subscribers?.[0],
    ).toMatchObject({ invalidateLatencyMs: 'normal:5:1' });
    expect(upConfig({ ...opts, hca: '0' }).subscribers).toEqual([]);
  });

  it('--kvm n starts subscribers kvm0..kvm(n-1) beside the HCAs, with --mmu-lock on each', () => {
    const cfg = upConfig({ ...opts, hca: '1', kvm: '2', mmuLock: 'generation' });
    expect(cfg.subscribers).toEqual([
      { name: 'hca0', kind: 'hca' },
      { name: 'kvm0', kind: 'kvm', mmuLock: 'generation' },
      { name: 'kvm1', kind: 'kvm', mmuLock: 'generation' },
    ]);
    expect(subscribersSummary(cfg)).toBe('1 HCA, 2 KVMs (mmu_lock generation)');
    // no --mmu-lock: the service's default (spin, v3.7); the latency goes to every subscriber
    const plain = upConfig({ ...opts, hca: '0', kvm: '1', invalidateLatency: '5' });
    expect(plain.subscribers).toEqual([{ name: 'kvm0', kind: 'kvm', invalidateLatencyMs: 5 }]);
    expect(subscribersSummary(plain)).toBe('0 HCAs, 1 KVM (mmu_lock spin)');
    expect(subscribersSummary(upConfig(opts))).toBe('2 HCAs');
  });

  it('names a bad option', () => {
    expect(() => upConfig({ ...opts, kvm: 'x' })).toThrow('--kvm must be an integer ≥ 0, got x');
    expect(() => upConfig({ ...opts, kvm: '1', mmuLock: 'rwlock' })).toThrow(
      '--mmu-lock must be spin, sleep, generation, got rwlock',
    );
    expect(() => upConfig({ ...opts, mmuLock: 'sleep' })).toThrow(/--mmu-lock is for KVMs/);
    expect(() => upConfig({ ...opts, hca: '-1' })).toThrow('--hca must be an integer ≥ 0, got -1');
    expect(() => upConfig({ ...opts, invalidateLatency: 'gauss:1:2' })).toThrow(
      /^EINVAL: --invalidate-latency: bad latency "gauss:1:2"/,
    );
  });
});
