import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { TraceEvent } from '@mmlab/protocol';
import { EventsQuery, InvariantsQuery, TRACE_KINDS } from './http-query';
import { SeenEvents, decodeTraceEvent, decodeTraceMessage } from './trace-intake';
import { TraceFile } from './trace-file';

const ev: TraceEvent = {
  id: 'cpu0:1',
  ts: 1.5,
  service: 'cpu',
  instance: 'cpu0',
  kind: 'barrier',
  tag: 'x',
};

describe('decodeTraceEvent', () => {
  it('accepts a valid event and strips unknown fields', () => {
    expect(decodeTraceEvent(JSON.stringify({ ...ev, extra: 1 }))).toEqual({ ok: true, event: ev });
    expect(decodeTraceEvent(Buffer.from(JSON.stringify(ev)))).toEqual({ ok: true, event: ev });
  });

  it('rejects non-JSON and schema breaks with a reason, without throwing', () => {
    expect(decodeTraceEvent('{nope')).toEqual({ ok: false, reason: 'not JSON' });
    expect(decodeTraceEvent('null')).toMatchObject({ ok: false });
    const r = decodeTraceEvent(JSON.stringify({ ...ev, ts: 'soon' }));
    expect(r).toEqual({ ok: false, reason: 'ts: Invalid input: expected number, received string' });
  });
});

describe('decodeTraceMessage', () => {
  const ev2: TraceEvent = { ...ev, id: 'cpu0:2', ts: 2 };
  const batch = (events: unknown[], first = 1) =>
    JSON.stringify({ instance: 'cpu0', first, last: first + events.length - 1, events });

  it('unpacks a batch in order, with its seq range', () => {
    expect(decodeTraceMessage(batch([ev, ev2]))).toEqual({
      events: [
        { ok: true, event: ev },
        { ok: true, event: ev2 },
      ],
      range: { instance: 'cpu0', first: 1, last: 2 },
    });
  });

  it('still takes one bare event (no range)', () => {
    expect(decodeTraceMessage(JSON.stringify(ev))).toEqual({ events: [{ ok: true, event: ev }] });
  });

  it('rejects the bad events of a batch one by one and keeps the others', () => {
    const m = decodeTraceMessage(batch([ev, { ...ev2, ts: 'soon' }]));
    expect(m.events[0]).toEqual({ ok: true, event: ev });
    expect(m.events[1]).toEqual({
      ok: false,
      reason: 'ts: Invalid input: expected number, received string',
    });
  });

  it('rejects a broken batch envelope as one message, without throwing', () => {
    const m = decodeTraceMessage(JSON.stringify({ instance: 'cpu0', events: [ev] }));
    expect(m.range).toBeUndefined();
    expect(m.events).toHaveLength(1);
    const [d] = m.events;
    expect(d.ok ? 'stored' : d.reason).toMatch(/^batch: first: /);
    expect(decodeTraceMessage('{nope')).toEqual({ events: [{ ok: false, reason: 'not JSON' }] });
    expect(decodeTraceMessage('null').events[0]).toMatchObject({ ok: false });
  });
});

describe('TraceFile', () => {
  it('appends one JSON line per event and keeps earlier contents', async () => {
    const file = path.join(mkdtempSync(path.join(tmpdir(), 'mmlab-obs-')), 'sub', 'trace.jsonl');
    const f1 = await TraceFile.open(file);
    f1.append(ev);
    await f1.close();
    const f2 = await TraceFile.open(file);
    f2.append({ ...ev, id: 'cpu0:2' });
    f2.append({ ...ev, id: 'cpu0:3' });
    expect(f2.written).toBe(2);
    await f2.close();
    const lines = readFileSync(file, 'utf8').trimEnd().split('\n');
    expect(lines.map((l) => (JSON.parse(l) as TraceEvent).id)).toEqual([
      'cpu0:1',
      'cpu0:2',
      'cpu0:3',
    ]);
  });
});

describe('HTTP query schemas', () => {
  it('knows the event kinds of the wire contract', () => {
    expect(TRACE_KINDS).toContain('access');
    expect(TRACE_KINDS).toContain('ptl.acquire');
    expect(TRACE_KINDS).toContain('kvm.fault.begin');
    expect(TRACE_KINDS.every((k) => /^[a-z_]+(\.[a-z_]+){0,2}$/.test(k))).toBe(true);
  });

  it('parses filters and applies defaults', () => {
    expect(EventsQuery.parse({ kind: 'access,barrier', pid: '3', from: '1.5', to: '2' })).toEqual({
      kind: ['access', 'barrier'],
      pid: 3,
      from: 1.5,
      to: 2,
      offset: 0,
      limit: 1000,
    });
    expect(EventsQuery.parse({ from: '1e3', to: '1795558220155.439' })).toMatchObject({
      from: 1000,
      to: 1795558220155.439,
    });
    expect(InvariantsQuery.parse({})).toEqual({ maxViolations: 1000 });
  });

  it.each([
    { limit: '100001' },
    { limit: '-1' },
    { limit: '' },
    { pid: '0' },
    { kind: 'acces' },
    { from: '3', to: '2' },
    { from: '1e3x' },
    { to: '' },
    { pid: ['1', '2'] },
    { typo: '1' },
  ])('rejects %o', (q) => {
    expect(EventsQuery.safeParse(q).success).toBe(false);
  });
});

describe(SeenEvents.name, () => {
  const ev = (instance: string, seq: number, ts: number) =>
    ({
      id: `${instance}:${seq}`,
      ts,
      instance,
      service: 'mm',
      kind: 'madvise',
    }) as unknown as TraceEvent;

  it('drops a replayed copy, keeps a restarted instance reusing its ids at another time', () => {
    const seen = new SeenEvents(4);
    expect(seen.first(ev('mm-0', 1, 10))).toBe(true);
    expect(seen.first(ev('mm-0', 2, 11))).toBe(true);
    expect(seen.first(ev('mm-0', 1, 10))).toBe(false); // the replay
    expect(seen.first(ev('mm-1', 1, 10))).toBe(true); // another instance
    expect(seen.first(ev('mm-0', 1, 50))).toBe(true); // mm-0 restarted: seq 1 again, later
  });

  it('remembers the last `keep` events of each instance', () => {
    const seen = new SeenEvents(2);
    for (let i = 1; i <= 3; i++) expect(seen.first(ev('cpu0', i, i))).toBe(true);
    expect(seen.first(ev('cpu0', 3, 3))).toBe(false);
    expect(seen.first(ev('cpu0', 2, 2))).toBe(false);
    expect(seen.first(ev('cpu0', 1, 1))).toBe(true); // forgotten: older than `keep`
  });
});
