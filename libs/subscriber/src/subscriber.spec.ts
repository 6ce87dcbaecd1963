import { describe, expect, it } from 'vitest';
import { MmlabError, type TraceEvent } from '@mmlab/protocol';
import { OpIds, Tracer } from '@mmlab/runtime';
import { type NotifierOps, NotifierSubscriber, type SubscriberStore } from './subscriber';

function setup(ops: Partial<NotifierOps> = {}, fenced = false) {
  const tracer = new Tracer(null, 'kvm', 'dev0');
  const events: TraceEvent[] = [];
  tracer.tap((e) => events.push(e));
  const store: SubscriberStore = {
    frameAccess: async () => (fenced ? 'FENCED' : { gen: 1, state: 'used', value: 5 }),
    ptlHeldBy: async () => null,
    subscriberAlive: async () => {},
    livenessDrop: async () => {},
    unfence: async () => {},
    isFenced: async () => fenced,
  };
  const runs: string[] = [];
  const sub = new NotifierSubscriber(
    { name: 'dev0', store, tracer, ids: new OpIds('dev0'), leaseMs: 1000, seed: 1, log: console },
    {
      release: async () => void runs.push('release'),
      invalidateRangeStart: async (req) => void runs.push(`start ${req.inv}`),
      invalidateRangeEnd: async (req) => void runs.push(`end ${req.inv}`),
      ...ops,
    },
  );
  return { sub, events, runs };
}

const range = (inv: string) => ({
  pid: 1,
  inv,
  owner: 'mm-0/x',
  start: 0,
  end: 4096,
  event: 'unmap' as const,
});

describe('NotifierSubscriber', () => {
  it('runs a handler once per (callback, inv) and acks every resend', async () => {
    const { sub, runs, events } = setup();
    expect(await sub.invalidateRangeStart(range('i1'))).toEqual({ inv: 'i1' });
    expect(await sub.invalidateRangeStart(range('i1'))).toEqual({ inv: 'i1' });
    expect(await sub.invalidateRangeEnd(range('i1'))).toEqual({ inv: 'i1' });
    expect(runs).toEqual(['start i1', 'end i1']);
    expect(sub.seen('invalidate_range_end', 'i1')).toBe(true);
    expect(events.filter((e) => e.kind === 'mn.recv')).toHaveLength(3);
    expect(events.filter((e) => e.kind === 'mn.done')).toHaveLength(3);
  });

  it('acks a callback the device does not implement without work (a NULL op)', async () => {
    const { sub } = setup();
    expect(sub.callbacks).toEqual(['release', 'invalidate_range_start', 'invalidate_range_end']);
    expect(await sub.testYoung({ pid: 1, inv: 'y', owner: 'o', addr: 0 })).toEqual({
      inv: 'y',
      young: false,
    });
    const young = setup({ testYoung: async () => true }).sub;
    expect(young.callbacks).toContain('test_young');
    expect(await young.testYoung({ pid: 1, inv: 'y', owner: 'o', addr: 0 })).toEqual({
      inv: 'y',
      young: true,
    });
  });

  it('refuses the access of a fenced subscriber (ENODEV, access.refused)', async () => {
    const ok = setup().sub;
    expect(await ok.frameAccess({ op: 'a', pid: 1, addr: 0 }, 3, 'read')).toMatchObject({
      value: 5,
    });
    const { sub, events } = setup({}, true);
    const e = await sub
      .frameAccess({ op: 'a', pid: 1, addr: 0 }, 3, 'read')
      .catch((x: unknown) => x);
    expect(e).toBeInstanceOf(MmlabError);
    expect((e as MmlabError).code).toBe('ENODEV');
    expect(events.map((x) => x.kind)).toContain('access.refused');
  });
});
