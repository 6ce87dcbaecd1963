/**
 * OpenTelemetry across the lab: every service exports its spans over OTLP/HTTP (JSON) to a
 * receiver this test runs, and the trace context travels in NATS headers (`traceparent`) on
 * every hop, through Nest's NATS transport. A traced fault and a traced invalidation must each
 * come back as one trace, every span with the right parent, in the right service.
 */
import { type IncomingMessage, type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@mmlab/protocol';
import { type TestLab, startTestLab, until } from '@mmlab/testing';

/** OTLP span kinds as they travel in JSON (SpanKind + 1). */
const KIND = { internal: 1, server: 2, client: 3 } as const;

type AttrValue = string | number | boolean | AttrValue[] | undefined;

interface Rec {
  service: string;
  instance: string;
  traceId: string;
  spanId: string;
  parentSpanId: string | undefined;
  name: string;
  kind: number;
  attrs: Record<string, AttrValue>;
  links: Array<{ traceId: string; spanId: string }>;
}

interface OtlpValue {
  stringValue?: string;
  intValue?: string | number;
  doubleValue?: number;
  boolValue?: boolean;
  arrayValue?: { values?: OtlpValue[] };
}
interface OtlpKv {
  key: string;
  value: OtlpValue;
}
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes?: OtlpKv[];
  links?: Array<{ traceId: string; spanId: string }>;
}
interface OtlpRequest {
  resourceSpans?: Array<{
    resource?: { attributes?: OtlpKv[] };
    scopeSpans?: Array<{ spans?: OtlpSpan[] }>;
  }>;
}

function valueOf(v: OtlpValue): AttrValue {
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.doubleValue !== undefined) return v.doubleValue;
  if (v.boolValue !== undefined) return v.boolValue;
  if (v.arrayValue) return (v.arrayValue.values ?? []).map(valueOf);
  return undefined;
}

const attrsOf = (kvs: OtlpKv[] | undefined): Record<string, AttrValue> =>
  Object.fromEntries((kvs ?? []).map((kv) => [kv.key, valueOf(kv.value)]));

/** A minimal OTLP/HTTP trace receiver: POST /v1/traces with JSON bodies, decoded to flat span records. */
class OtlpReceiver {
  readonly spans: Rec[] = [];
  readonly errors: string[] = [];
  private readonly server: Server = createServer((req, res) => {
    this.receive(req).then(
      (status) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end('{}');
      },
      (e: unknown) => {
        this.errors.push(String(e));
        res.writeHead(400).end();
      },
    );
  });
  url = '';

  static async start(): Promise<OtlpReceiver> {
    const r = new OtlpReceiver();
    await new Promise<void>((done) => r.server.listen(0, '127.0.0.1', done));
    r.url = `http://127.0.0.1:${(r.server.address() as AddressInfo).port}`;
    return r;
  }

  private async receive(req: IncomingMessage): Promise<number> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    if (req.method !== 'POST' || req.url !== '/v1/traces') {
      this.errors.push(`unexpected ${req.method} ${req.url}`);
      return 404;
    }
    let body = Buffer.concat(chunks);
    if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body);
    if (!String(req.headers['content-type']).includes('json'))
      throw new Error(`not JSON: ${req.headers['content-type']}`);
    const msg = JSON.parse(body.toString('utf8')) as OtlpRequest;
    for (const rs of msg.resourceSpans ?? []) {
      const res = attrsOf(rs.resource?.attributes);
      for (const ss of rs.scopeSpans ?? [])
        for (const s of ss.spans ?? [])
          this.spans.push({
            service: String(res['service.name']),
            instance: String(res['service.instance.id']),
            traceId: s.traceId,
            spanId: s.spanId,
            parentSpanId: s.parentSpanId || undefined,
            name: s.name,
            kind: s.kind,
            attrs: attrsOf(s.attributes),
            links: (s.links ?? []).map((l) => ({ traceId: l.traceId, spanId: l.spanId })),
          });
    }
    return 200;
  }

  trace(traceId: string): Rec[] {
    return this.spans.filter((s) => s.traceId === traceId);
  }

  close(): Promise<void> {
    return new Promise((r) => this.server.close(() => r()));
  }
}

/** The one span of spans that matches; fails (naming what was there) unless there is exactly one. */
function one(spans: Rec[], pred: (s: Rec) => boolean, what: string): Rec {
  const found = spans.filter(pred);
  expect(
    found.length,
    `${what}: expected exactly one, found ${found.length} among ${spans.map((s) => `${s.service}:${s.name}`).join(', ')}`,
  ).toBe(1);
  return found[0];
}

/** Every span of a trace hangs off the one root: one trace, no dangling parent. */
function expectOneTree(spans: Rec[]): Rec {
  const ids = new Set(spans.map((s) => s.spanId));
  const roots = spans.filter((s) => s.parentSpanId === undefined);
  expect(
    roots.map((s) => s.name),
    'one root',
  ).toHaveLength(1);
  for (const s of spans)
    if (s.parentSpanId !== undefined)
      expect(ids.has(s.parentSpanId), `parent of ${s.service}:${s.name} is in the trace`).toBe(
        true,
      );
  expect(new Set(spans.map((s) => s.traceId)).size).toBe(1);
  return roots[0];
}

const has = (spans: Rec[], pred: (s: Rec) => boolean) => spans.some(pred);

/**
 * Wait (polling) until the spans cond looks for have been exported. Spans come from several
 * processes, each on its own export schedule. If they never all come, the assertions that
 * follow say which span is missing or misplaced, which is more than a timeout would.
 */
const settle = (cond: () => boolean, what: string): Promise<void> =>
  until(cond, what, 15_000).catch(() => undefined);

describe('OpenTelemetry: one trace per fault and per invalidation, across every service', () => {
  let otlp: OtlpReceiver;
  let t: TestLab | undefined;

  beforeAll(async () => {
    otlp = await OtlpReceiver.start();
    t = await startTestLab(
      {
        mode: 'patched',
        frames: 64,
        cpus: 1,
        mmReplicas: 2,
        observer: false,
        subscribers: [{ name: 'hca0', kind: 'hca' }],
        env: {
          OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url,
          OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
          OTEL_BSP_SCHEDULE_DELAY: '100',
        },
      },
      { rpcTimeoutMs: 30_000 },
    );
  });
  afterAll(async () => {
    await t?.stop();
    await otlp?.close();
  });

  it('a CPU write fault (COW of the zero page): cpu → mm → PT lock → TLB shootdown, one trace', async () => {
    const { rpc } = t!;
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 2, prot: 'rw' });
    // A read maps the zero page; the write then copies it (do_wp_page), under the PT lock.
    await rpc.call('cpuAccess', { pid, addr, op: 'read' }, { id: 0 });
    const w = await rpc.call('cpuAccess', { pid, addr, op: 'write', value: 7 }, { id: 0 });
    expect(w.faults).toBe(1);

    const isWpFault = (s: Rec) =>
      s.name === 'handle_mm_fault' &&
      s.attrs['mmlab.pid'] === pid &&
      s.attrs['mmlab.how'] === 'wp-copy';
    let traceId = '';
    await settle(() => {
      const f = otlp.spans.find(isWpFault);
      if (!f) return false;
      traceId = f.traceId;
      const spans = otlp.trace(traceId);
      return ['mmlab.cpu.0.access', 'cpu.access', 'mmlab.mm.fault', 'mmlab.cpu.0.flush_tlb'].every(
        (n) => has(spans, (s) => s.name === n),
      );
    }, 'the spans of the write fault');
    expect(otlp.errors).toEqual([]);
    expect(traceId, 'the write fault has a handle_mm_fault span').not.toBe('');
    const spans = otlp.trace(traceId);

    // The request to the CPU (from this untraced test) starts the trace; cpu.access runs in it.
    const root = expectOneTree(spans);
    expect(root).toMatchObject({
      name: 'mmlab.cpu.0.access',
      service: 'cpu',
      instance: 'cpu0',
      kind: KIND.server,
    });
    const access = one(spans, (s) => s.name === 'cpu.access', 'cpu.access');
    expect(access).toMatchObject({ service: 'cpu', parentSpanId: root.spanId });
    expect(access.attrs['mmlab.access']).toBe('write');
    // The fault request crossed NATS to one mm replica: its handler span is cpu.access's child.
    const rpcSpan = one(spans, (s) => s.name === 'mmlab.mm.fault', 'fault handler');
    expect(rpcSpan).toMatchObject({
      service: 'mm',
      kind: KIND.server,
      parentSpanId: access.spanId,
    });
    expect(['mm-0', 'mm-1']).toContain(rpcSpan.instance);
    const fault = one(spans, isWpFault, 'handle_mm_fault');
    expect(fault).toMatchObject({
      service: 'mm',
      instance: rpcSpan.instance,
      parentSpanId: rpcSpan.spanId,
    });
    expect(fault.attrs['mmlab.access']).toBe('write');
    // do_wp_page's PT-lock hold, and the TLB shootdown sent to the CPU while it is held.
    const ptl = one(spans, (s) => /^ptl ptl:\d+$/.test(s.name), 'PT-lock hold');
    expect(ptl).toMatchObject({
      service: 'mm',
      instance: rpcSpan.instance,
      parentSpanId: fault.spanId,
    });
    expect(ptl.attrs['mmlab.released']).toBe(true);
    // one emission: the span's attributes are the ptl.acquire and ptl.release events' fields
    expect(ptl.attrs['mmlab.lock']).toBe(ptl.name.slice(4));
    expect(typeof ptl.attrs['mmlab.heldMs']).toBe('number');
    expect(fault.attrs['mmlab.result']).toBe('ok');
    const flush = one(spans, (s) => s.name === 'mmlab.cpu.0.flush_tlb', 'flush_tlb handler');
    expect(flush).toMatchObject({ service: 'cpu', kind: KIND.server, parentSpanId: ptl.spanId });
    // No notifier subscriber yet: nothing of the HCA, and no invalidate_page trace.
    expect(spans.filter((s) => s.service === 'hca')).toEqual([]);

    // One trace per access: the read's zero-page fault is a trace of its own.
    const read = otlp.spans.find(
      (s) =>
        s.name === 'handle_mm_fault' &&
        s.attrs['mmlab.pid'] === pid &&
        s.attrs['mmlab.how'] === 'zero',
    );
    expect(read).toBeDefined();
    expect(read!.traceId).not.toBe(traceId);
  });

  it('an ODP MR and a munmap: one invalidation trace through mm, hca0 and the CPU, linked to the munmap', async () => {
    const { rpc } = t!;
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 4, prot: 'rw' });
    await rpc.call('cpuAccess', { pid, addr, op: 'write', value: 5 }, { id: 0 });
    const { mr } = await rpc.call(
      'hcaRegMr',
      { pid, addr, pages: 4, odp: true, access: ['read'] },
      { id: 'hca0' },
    );
    const r = await rpc.call('hcaRdmaRead', { mr, addr }, { id: 'hca0' });
    expect(r).toMatchObject({ value: 5, npf: 1 });
    // A COW with a subscriber registered: do_wp_page's range invalidation (v3.7), a trace of its own.
    const page1 = addr + PAGE_SIZE;
    await rpc.call('cpuAccess', { pid, addr: page1, op: 'read' }, { id: 0 });
    await rpc.call('cpuAccess', { pid, addr: page1, op: 'write', value: 6 }, { id: 0 });
    await rpc.call('munmap', { pid, addr, pages: 4 });

    const isRangeOf = (event: string) => (s: Rec) =>
      s.name === 'mmu_notifier_invalidate_range' &&
      s.attrs['mmlab.pid'] === pid &&
      s.attrs['mmlab.mn.event'] === event;
    const isRange = isRangeOf('unmap');
    const isCow = isRangeOf('clear');
    const wanted = [
      'invalidate_range_start hca0',
      'invalidate_range_end hca0',
      'mmlab.sub.hca0.invalidate_range_start',
      'mmlab.sub.hca0.invalidate_range_end',
      'ib_umem_notifier_invalidate_range_start',
      'mmlab.cpu.0.flush_tlb',
    ];
    await settle(() => {
      const root = otlp.spans.find(isRange);
      const cow = otlp.spans.find(isCow);
      if (!root || !cow) return false;
      const spans = otlp.trace(root.traceId);
      return (
        wanted.every((n) => has(spans, (s) => s.name === n)) &&
        has(otlp.trace(cow.traceId), (s) => s.name === 'mmlab.sub.hca0.invalidate_range_end') &&
        has(otlp.spans, (s) => s.name === 'mmlab.mm.munmap')
      );
    }, 'the spans of the invalidations');
    expect(otlp.errors).toEqual([]);

    // The range invalidation: its own trace, rooted at mmu_notifier_invalidate_range in mm.
    const root = one(otlp.spans, isRange, 'range invalidation root');
    const spans = otlp.trace(root.traceId);
    expect(expectOneTree(spans).spanId, 'the trace is rooted at the invalidation').toBe(
      root.spanId,
    );
    expect(root).toMatchObject({ service: 'mm', parentSpanId: undefined });
    expect(root.attrs['mmlab.mn.event']).toBe('unmap');
    expect(root.attrs['mmlab.mn.subscribers']).toEqual(['hca0']);
    // Each callback to hca0 is a child of the root; the HCA's handler is the callback's child.
    for (const cb of ['invalidate_range_start', 'invalidate_range_end']) {
      const call = one(spans, (s) => s.name === `${cb} hca0`, `${cb} callback`);
      expect(call).toMatchObject({
        service: 'mm',
        instance: root.instance,
        kind: KIND.client,
        parentSpanId: root.spanId,
      });
      expect(call.attrs['mmlab.mn.outcome']).toBe('ack');
      const handler = one(spans, (s) => s.name === `mmlab.sub.hca0.${cb}`, `hca0 ${cb} handler`);
      expect(handler).toMatchObject({
        service: 'hca',
        instance: 'hca0',
        kind: KIND.server,
        parentSpanId: call.spanId,
      });
      const work = one(spans, (s) => s.name === `ib_umem_notifier_${cb}`, `hca0 ${cb} work`);
      expect(work).toMatchObject({ service: 'hca', parentSpanId: handler.spanId });
    }
    // The zap between start and end: its PT-lock hold, and the TLB shootdown under it, in the
    // same trace.
    const ptl = one(spans, (s) => /^ptl ptl:\d+$/.test(s.name), 'PT-lock hold of the zap');
    expect(ptl).toMatchObject({
      service: 'mm',
      instance: root.instance,
      parentSpanId: root.spanId,
    });
    const flush = one(spans, (s) => s.name === 'mmlab.cpu.0.flush_tlb', 'flush_tlb handler');
    expect(flush).toMatchObject({ service: 'cpu', instance: 'cpu0', parentSpanId: ptl.spanId });
    expect(new Set(spans.map((s) => s.service))).toEqual(new Set(['mm', 'hca', 'cpu']));

    // The munmap has its own trace, and the invalidation links to it.
    const munmaps = otlp.spans.filter(
      (s) => s.name === 'mmlab.mm.munmap' && s.instance === root.instance,
    );
    const munmap = one(
      munmaps,
      (s) => root.links.some((l) => l.traceId === s.traceId && l.spanId === s.spanId),
      'the munmap the invalidation links to',
    );
    expect(munmap.traceId).not.toBe(root.traceId);
    expect(munmap).toMatchObject({ service: 'mm', kind: KIND.server, parentSpanId: undefined });
    expect(root.links).toHaveLength(1);
    expect(spans.filter((s) => s.name === 'mmlab.mm.munmap')).toEqual([]);

    // do_wp_page's range invalidation (v3.7: start before the PT lock, end after the unlock):
    // a trace of its own, with the COW's PT-lock hold inside it, linked to the fault.
    const cow = one(otlp.spans, isCow, 'COW range invalidation root');
    const cowSpans = otlp.trace(cow.traceId);
    expect(expectOneTree(cowSpans).spanId, 'the trace is rooted at the invalidation').toBe(
      cow.spanId,
    );
    expect(cow.traceId).not.toBe(root.traceId);
    const cowCall = one(
      cowSpans,
      (s) => s.name === 'invalidate_range_start hca0',
      'COW range start callback',
    );
    expect(cowCall).toMatchObject({ service: 'mm', parentSpanId: cow.spanId });
    const cowHandler = one(
      cowSpans,
      (s) => s.name === 'mmlab.sub.hca0.invalidate_range_start',
      'hca0 invalidate_range_start handler',
    );
    expect(cowHandler).toMatchObject({ service: 'hca', parentSpanId: cowCall.spanId });
    const cowPtl = one(cowSpans, (s) => /^ptl ptl:\d+$/.test(s.name), 'the COW PT-lock hold');
    expect(cowPtl).toMatchObject({ service: 'mm', parentSpanId: cow.spanId });
    const wp = one(
      otlp.spans,
      (s) =>
        s.name === 'handle_mm_fault' &&
        s.attrs['mmlab.pid'] === pid &&
        s.attrs['mmlab.addr'] === `0x${page1.toString(16)}` &&
        s.attrs['mmlab.how'] === 'wp-copy',
      'the COW fault of page 1',
    );
    expect(cow.links).toEqual([{ traceId: wp.traceId, spanId: wp.spanId }]);
  });
});

describe('OpenTelemetry: shutdown', () => {
  it('exports the spans still queued when a service is stopped', async () => {
    const otlp = await OtlpReceiver.start();
    let t: TestLab | undefined;
    try {
      t = await startTestLab({
        mode: 'patched',
        frames: 16,
        cpus: 1,
        mmReplicas: 1,
        observer: false,
        // Batches are due only every ten minutes: whatever arrives, arrives at shutdown.
        env: { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, OTEL_BSP_SCHEDULE_DELAY: '600000' },
      });
      const { pid } = await t.rpc.call('processCreate', {});
      const { addr } = await t.rpc.call('mmap', { pid, pages: 1, prot: 'rw' });
      await t.rpc.call('cpuAccess', { pid, addr, op: 'write', value: 1 }, { id: 0 });
      expect(otlp.spans).toEqual([]);
      await t.stop(); // SIGTERM to every service, and wait for each to exit
      t = undefined;
      const fault = one(
        otlp.spans,
        (s) => s.name === 'handle_mm_fault' && s.attrs['mmlab.pid'] === pid,
        'the fault',
      );
      const access = one(
        otlp.spans,
        (s) => s.name === 'cpu.access' && s.attrs['mmlab.pid'] === pid,
        'the access',
      );
      expect(fault.traceId).toBe(access.traceId);
      expect(otlp.errors).toEqual([]);
    } finally {
      await t?.stop();
      await otlp.close();
    }
  });
});
