import { describe, expect, it } from 'vitest';
import { describeHoles, traceHoles } from './trace-holes';

const ev = (instance: string, seq: number, ts: number) => ({
  id: `${instance}:${seq}`,
  ts,
  instance,
});

describe('traceHoles', () => {
  it('a whole trace has none', () => {
    const events = [ev('cpu0', 4, 1), ev('cpu0', 5, 2), ev('mm-0', 1, 3)];
    const at = new Map([['cpu0', 3]]);
    expect(
      traceHoles(
        events,
        [
          { instance: 'cpu0', published: 5 },
          { instance: 'mm-0', published: 1 },
        ],
        at,
      ),
    ).toEqual([]);
  });

  it('the last batches of an instance, lost with nothing after them, are a hole', () => {
    const events = [ev('cpu0', 4, 1), ev('cpu0', 5, 2)];
    const holes = traceHoles(events, [{ instance: 'cpu0', published: 8 }], new Map([['cpu0', 3]]));
    expect(holes).toEqual([{ instance: 'cpu0', missing: 3, first: 6, published: 8 }]);
    expect(describeHoles(holes)).toBe('cpu0 3 of its events (first seq 6 of 8)');
  });

  it('a hole in the middle, and an instance that published but of which nothing arrived', () => {
    const events = [ev('cpu0', 1, 1), ev('cpu0', 3, 2)];
    expect(
      traceHoles(
        events,
        [
          { instance: 'cpu0', published: 3 },
          { instance: 'cpu1', published: 2 },
        ],
        new Map(),
      ),
    ).toEqual([
      { instance: 'cpu0', missing: 1, first: 2, published: 3 },
      { instance: 'cpu1', missing: 2, first: 1, published: 2 },
    ]);
  });

  it('a restarted instance is held from seq 1 of its new incarnation only', () => {
    // old incarnation: 10, 11 (12 died with it); the new one: 1, 2, 3
    const events = [
      ev('mm-1', 10, 1),
      ev('mm-1', 11, 2),
      ev('mm-1', 1, 5),
      ev('mm-1', 2, 6),
      ev('mm-1', 3, 7),
    ];
    const at = new Map([['mm-1', 9]]);
    expect(traceHoles(events, [{ instance: 'mm-1', published: 3 }], at)).toEqual([]);
    expect(traceHoles(events.slice(0, 4), [{ instance: 'mm-1', published: 3 }], at)).toEqual([
      { instance: 'mm-1', missing: 1, first: 3, published: 3 },
    ]);
  });

  it('events outside the run (before atStart) are not asked for; ids of other shapes are ignored', () => {
    const events = [ev('hca0', 7, 1), { id: 'runner:x', ts: 2, instance: 'hca0' }];
    expect(
      traceHoles(events, [{ instance: 'hca0', published: 7 }], new Map([['hca0', 6]])),
    ).toEqual([]);
  });
});
