import { describe, expect, it } from 'vitest';
import type { TraceEvent } from '@mmlab/protocol';
import { INVARIANT_NAMES, RULES, checkInvariants, implementedInvariants } from './index';
import type { Rule } from './types';
import { A, acquire, read, release, write } from './test-util';

describe('checkInvariants', () => {
  it('knows the eight invariants of DESIGN.md §4, in its order', () => {
    expect(INVARIANT_NAMES).toEqual([
      'no-sleep-under-ptlock',
      'paired-range',
      'teardown-before-free',
      'no-stale-access',
      'no-map-during-invalidate',
      'coherent-reads',
      'fenced-writes',
      'bounded-ptlock-hold',
    ]);
  });

  it('gives one verdict per implemented rule, in INVARIANT_NAMES order: all eight', () => {
    const names = [...INVARIANT_NAMES];
    expect(implementedInvariants()).toEqual(names);
    expect(Object.keys(RULES).sort()).toEqual([...names].sort());
    const verdicts = checkInvariants([], { softlockupMs: 1000 });
    expect(verdicts).toEqual(names.map((name) => ({ name, ok: true, checked: 0, violations: [] })));
  });

  it('hands each rule the events sorted by ts, stably, without touching the input', () => {
    const seen: number[][] = [];
    const spy: Rule<'paired-range'> = {
      name: 'paired-range',
      models: 'a spy',
      check: (events) => {
        seen.push(events.map((e) => e.ts * 10 + (e.kind === 'ptl.acquire' ? 1 : 2)));
        return { checked: events.length, violations: [] };
      },
    };
    const input: TraceEvent[] = [
      release('ptl:0', 1, 3, 1),
      acquire('ptl:0', 1, 2),
      release('ptl:0', 2, 2, 0),
    ];
    const copy = [...input];
    const verdicts = checkInvariants(input, { softlockupMs: 1 }, { 'paired-range': spy });
    expect(verdicts).toEqual([{ name: 'paired-range', ok: true, checked: 3, violations: [] }]);
    expect(seen).toEqual([[21, 22, 32]]);
    expect(input).toEqual(copy);
  });

  it('runs every rule over one trace', () => {
    const stale = read(A, 5, 5, 6, { gen: 1, frameGen: 2 });
    const verdicts = checkInvariants(
      [write(A, 5, 1, 2), stale, acquire('ptl:0', 1, 0), release('ptl:0', 1, 9, 9)],
      {
        softlockupMs: 5,
      },
    );
    expect(verdicts.map((v) => [v.name, v.ok, v.checked])).toEqual([
      ['no-sleep-under-ptlock', true, 0],
      ['paired-range', true, 0],
      ['teardown-before-free', true, 0],
      ['no-stale-access', false, 2],
      ['no-map-during-invalidate', true, 0],
      ['coherent-reads', true, 1],
      ['fenced-writes', true, 0],
      ['bounded-ptlock-hold', false, 1],
    ]);
  });

  it('rejects a nonsensical threshold', () => {
    expect(() => checkInvariants([], { softlockupMs: -1 })).toThrow(RangeError);
    expect(() => checkInvariants([], { softlockupMs: NaN })).toThrow(RangeError);
  });
});
