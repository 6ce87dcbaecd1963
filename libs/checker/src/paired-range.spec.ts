import { describe, expect, it } from 'vitest';
import { A, B, rangeEnd, rangeStart, verdictOf, violating } from './test-util';

const HUGE = 2 * 1024 * 1024;

describe('paired-range', () => {
  it('passes nested and interleaved ranges each ended once with its own range', () => {
    const v = verdictOf('paired-range', [
      rangeStart('i1', A, A + HUGE, 1),
      rangeStart('i2', B, B + 4096, 2, 2),
      rangeEnd('i2', B, B + 4096, 3, 2),
      rangeStart('i3', A, B, 4),
      rangeEnd('i1', A, A + HUGE, 5),
      rangeEnd('i3', A, B, 6),
    ]);
    expect(v).toEqual({ name: 'paired-range', ok: true, checked: 3, violations: [] });
  });

  it('pairs by inv, so an end stamped before its start (clock skew) still pairs', () => {
    const v = verdictOf('paired-range', [rangeEnd('i1', A, B, 1), rangeStart('i1', A, B, 2)]);
    expect(v).toMatchObject({ ok: true, checked: 1 });
  });

  it('reports an end whose range differs from its start (the haddr bug)', () => {
    const s = rangeStart('i1', A, A + HUGE, 1);
    const e = rangeEnd('i1', B, B + HUGE, 2);
    const v = verdictOf('paired-range', [s, e, rangeStart('i2', A, B, 3), rangeEnd('i2', A, B, 4)]);
    expect(v.checked).toBe(2);
    expect(violating(v)).toEqual([[s, e]]);
    expect(v.violations[0].message).toBe(
      'invalidate_range_end of inv i1 carries [0x10001000, 0x10201000) of pid 1, but its start was [0x10000000, 0x10200000) of pid 1',
    );
  });

  it('reports an end for another mm, or whose start or end address alone differs', () => {
    const s1 = rangeStart('i1', A, B, 1);
    const e1 = rangeEnd('i1', A, B, 2, 2);
    const s2 = rangeStart('i2', A, B, 3);
    const e2 = rangeEnd('i2', A, B + 4096, 4);
    const s3 = rangeStart('i3', A, B + 4096, 5);
    const e3 = rangeEnd('i3', B, B + 4096, 6);
    expect(violating(verdictOf('paired-range', [s1, e1, s2, e2, s3, e3]))).toEqual([
      [s1, e1],
      [s2, e2],
      [s3, e3],
    ]);
  });

  it('reports a start never ended by the end of the trace', () => {
    const s = rangeStart('i1', A, B, 1);
    const v = verdictOf('paired-range', [s]);
    expect(violating(v)).toEqual([[s]]);
    expect(v.violations[0].message).toBe(
      'invalidate_range_start of [0x10000000, 0x10001000) of pid 1 (inv i1) never got its invalidate_range_end',
    );
  });

  it('reports an end with no start', () => {
    const e = rangeEnd('i5', A, B, 1);
    const v = verdictOf('paired-range', [e]);
    expect(violating(v)).toEqual([[e]]);
    expect(v.violations[0].message).toBe(
      'invalidate_range_end of [0x10000000, 0x10001000) of pid 1 (inv i5) has no invalidate_range_start',
    );
  });

  it('reports a second end for one inv', () => {
    const s = rangeStart('i1', A, B, 1);
    const e1 = rangeEnd('i1', A, B, 2);
    const e2 = rangeEnd('i1', A, B, 3);
    const v = verdictOf('paired-range', [s, e2, e1]);
    expect(violating(v)).toEqual([[s, e1, e2]]);
    expect(v.violations[0].message).toBe(
      'invalidate_range_end of [0x10000000, 0x10001000) of pid 1 is a second end for inv i1',
    );
  });

  it('reports a second start reusing an inv', () => {
    const s1 = rangeStart('i1', A, B, 1);
    const s2 = rangeStart('i1', A, B, 2);
    const v = verdictOf('paired-range', [s1, s2, rangeEnd('i1', A, B, 3)]);
    expect(violating(v)).toEqual([[s1, s2]]);
  });
});
