import { describe, expect, it } from 'vitest';
import { RateMeter, markExpected } from './live';
import { labelChars } from './layout';

describe(RateMeter.name, () => {
  it('counts the last second, and falls to 0 when nothing arrives', () => {
    const m = new RateMeter(1000);
    m.add(0, 10);
    m.add(500, 5);
    expect(m.rate(600)).toBe(15);
    expect(m.rate(1200)).toBe(5);
    // idle: no add, only reads: the rate decays instead of keeping its last value
    expect(m.rate(1600)).toBe(0);
  });
});

describe(markExpected.name, () => {
  const v = (invariant: string, ...ids: string[]) => ({
    invariant,
    message: invariant,
    events: ids.map((id) => ({ id })),
  });
  const ts: Record<string, number> = { old: 5, a: 20, b: 30 };
  const run = { ts: 10, scenario: 'inject', invariants: ['paired-range'] };

  it("marks the running scenario's expected invariants, only for events since it began", () => {
    const out = markExpected(
      [
        v('paired-range', 'a', 'b'),
        v('paired-range', 'old', 'a'),
        v('fenced-writes', 'a'),
        v('paired-range', 'gone'),
      ],
      run,
      (id) => ts[id],
    );
    expect(out.map((x) => x.expected)).toEqual([true, false, false, false]);
  });

  it('marks nothing without a run', () => {
    expect(markExpected([v('paired-range', 'a')], null, (id) => ts[id])[0].expected).toBe(false);
  });
});

describe(labelChars.name, () => {
  it('gives a label the room up to the right edge, whichever column it is in', () => {
    expect(labelChars(100, 1000)).toBe(Math.floor((1000 - 100 - 15) / 5.6));
    expect(labelChars(900, 1000)).toBe(15);
    expect(labelChars(990, 1000)).toBe(12);
  });
});
