import { describe, expect, it } from 'vitest';
import { MmlabError, TraceBatch, type TraceEvent } from '@mmlab/protocol';
import { Tracer, eventAttributes } from './tracer';

const recording = () => {
  const t = new Tracer(null, 'hca', 'hca0');
  const seen: TraceEvent[] = [];
  t.tap((e) => seen.push(e));
  return { t, seen };
};

describe('Tracer.step', () => {
  it('emits the begin event, runs the step at once, then emits the end event', async () => {
    const { t, seen } = recording();
    let ran = false;
    const p = t.step(
      'mmu_notifier_invalidate_page',
      { kind: 'mn.recv', agent: 'hca0', pid: 1, callback: 'invalidate_page', inv: 'i1' },
      () => {
        ran = true;
        expect(seen.map((e) => e.kind)).toEqual(['mn.recv']);
        return Promise.resolve(7);
      },
      (o) => {
        expect(o).toEqual({ ok: true, value: 7 });
        return { kind: 'mn.done', agent: 'hca0', pid: 1, callback: 'invalidate_page', inv: 'i1' };
      },
    );
    expect(ran).toBe(true); // in this tick, right after the begin event
    expect(await p).toBe(7);
    expect(seen.map((e) => [e.kind, e.id])).toEqual([
      ['mn.recv', 'hca0:1'],
      ['mn.done', 'hca0:2'],
    ]);
  });

  it('emits the end event when the step fails, and rethrows', async () => {
    const { t, seen } = recording();
    const failure = new MmlabError('ENODEV', 'device gone');
    await expect(
      t.step(
        'x',
        { kind: 'barrier', tag: 'a' },
        () => Promise.reject(failure),
        (o) => {
          expect(o).toEqual({ ok: false, error: failure });
          return { kind: 'barrier', tag: 'b' };
        },
      ),
    ).rejects.toBe(failure);
    expect(seen.map((e) => (e.kind === 'barrier' ? e.tag : e.kind))).toEqual(['a', 'b']);
  });
});

describe('Tracer.open', () => {
  it('emits the begin event now and the end event once, at end()', () => {
    const { t, seen } = recording();
    const h = t.open('ptl ptl:0', {
      kind: 'ptl.acquire',
      pid: 1,
      lock: 'ptl:0',
      owner: 'mm-0',
      token: 4,
      waitMs: 0,
    });
    expect(h.event.kind).toBe('ptl.acquire');
    expect(h.span).toBeUndefined(); // telemetry off: no span at all
    const release = {
      kind: 'ptl.release',
      pid: 1,
      lock: 'ptl:0',
      owner: 'mm-0',
      token: 4,
      heldMs: 1,
      released: true,
    } as const;
    expect(h.end(release)?.kind).toBe('ptl.release');
    expect(h.end(release)).toBeUndefined(); // a second end() does nothing
    expect(seen.map((e) => e.kind)).toEqual(['ptl.acquire', 'ptl.release']);
  });
});

describe('eventAttributes', () => {
  it("turns an event's fields into mmlab.* span attributes, addresses in hex", () => {
    const { t } = recording();
    const e = t.emit({
      kind: 'mn.recv',
      op: 'hca0/x#1',
      agent: 'hca0',
      pid: 3,
      callback: 'invalidate_range_start',
      inv: 'i9',
      start: 0x10000,
      end: 0x12000,
    });
    expect(eventAttributes(e)).toEqual({
      'mmlab.op': 'hca0/x#1',
      'mmlab.instance': 'hca0',
      'mmlab.agent': 'hca0',
      'mmlab.pid': 3,
      'mmlab.callback': 'invalidate_range_start',
      'mmlab.inv': 'i9',
      'mmlab.start': '0x10000',
      'mmlab.end': '0x12000',
    });
  });
});

describe('TraceBatch', () => {
  it('accepts consecutive events with their seq range and refuses an empty batch', () => {
    const { t } = recording();
    const events = [t.emit({ kind: 'barrier', tag: 'a' }), t.emit({ kind: 'barrier', tag: 'b' })];
    expect(TraceBatch.safeParse({ instance: 'hca0', first: 1, last: 2, events }).success).toBe(
      true,
    );
    expect(TraceBatch.safeParse({ instance: 'hca0', first: 1, last: 2, events: [] }).success).toBe(
      false,
    );
  });
});
