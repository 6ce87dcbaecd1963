import { describe, expect, it } from 'vitest';
import { acquire, mk, mnSend, release, verdictOf, violating } from './test-util';

const L = 'ptl:3';
const barrier = (ts: number) => mk('barrier', ts, { tag: 'end' });

describe('bounded-ptlock-hold', () => {
  it('passes holds up to the threshold (inclusive)', () => {
    const v = verdictOf('bounded-ptlock-hold', [acquire(L, 1, 0), release(L, 1, 1000, 1000)], 1000);
    expect(v).toEqual({ name: 'bounded-ptlock-hold', ok: true, checked: 1, violations: [] });
  });

  it('reports a hold longer than the soft-lockup threshold', () => {
    const a = acquire(L, 1, 0);
    const r = release(L, 1, 1500, 1500);
    const v = verdictOf(
      'bounded-ptlock-hold',
      [acquire('ptl:4', 2, 0), release('ptl:4', 2, 5, 5), a, r],
      1000,
    );
    expect(v.checked).toBe(2);
    expect(violating(v)).toEqual([[a, r]]);
    expect(v.violations[0].message).toBe(
      'ptl:3 of pid 1 (token 1, mm-0) held for 1500 ms, over the 1000 ms soft-lockup threshold',
    );
    expect(verdictOf('bounded-ptlock-hold', [a, r], 2000).ok).toBe(true);
  });

  it('holds a never-released lock until the end of the trace', () => {
    const a = acquire(L, 1, 0);
    expect(verdictOf('bounded-ptlock-hold', [a, barrier(900)]).ok).toBe(true);
    const v = verdictOf('bounded-ptlock-hold', [a, barrier(1200)]);
    expect(violating(v)).toEqual([[a]]);
    expect(v.violations[0].message).toBe(
      'ptl:3 of pid 1 (token 1, mm-0) never released: held 1200 ms until the end of the trace, over the 1000 ms soft-lockup threshold',
    );
  });

  it('holds a never-released lock until another token takes it over', () => {
    const a = acquire(L, 1, 0, 'mm-0');
    const late = acquire(L, 2, 1300, 'mm-1');
    const v = verdictOf('bounded-ptlock-hold', [a, late, release(L, 2, 1301, 1), barrier(1400)]);
    expect(v.checked).toBe(2);
    expect(violating(v)).toEqual([[a, late]]);
    expect(v.violations[0].message).toContain('until token 2 took the lock over');

    const early = acquire(L, 2, 500, 'mm-1');
    const ok = verdictOf('bounded-ptlock-hold', [a, early, release(L, 2, 501, 1), barrier(5000)]);
    expect(ok).toMatchObject({ ok: true, checked: 2 });
  });

  it('checks a release whose acquire is not in the trace by its heldMs', () => {
    const r = release(L, 7, 10, 2500);
    const v = verdictOf('bounded-ptlock-hold', [r, release(L, 8, 20, 3)]);
    expect(v.checked).toBe(2);
    expect(violating(v)).toEqual([[r]]);
  });

  it('pairs a release stamped before its acquire (clock skew) by (pid, lock, token)', () => {
    const v = verdictOf('bounded-ptlock-hold', [
      release(L, 1, 10, 2),
      acquire(L, 1, 11),
      barrier(5000),
    ]);
    expect(v).toMatchObject({ ok: true, checked: 1 });
  });

  it('a subscriber that sleeps in change_pte (sent under the lock, v3.7) shows as a long hold', () => {
    // change_pte itself is no no-sleep-under-ptlock violation; the hold it stretches is.
    const a = acquire(L, 1, 0);
    const send = mnSend(10, { inv: 'c1', callback: 'change_pte', ptl: L });
    const ack = mk('mn.ack', 1510, {
      pid: 1,
      subscriber: 'hca0',
      callback: 'change_pte',
      inv: 'c1',
      waitedMs: 1500,
    });
    const r = release(L, 1, 1520, 1520);
    const events = [a, send, ack, r];
    expect(violating(verdictOf('bounded-ptlock-hold', events, 1000))).toEqual([[a, r]]);
    expect(verdictOf('no-sleep-under-ptlock', events).ok).toBe(true);
    // answered at once (as it must be), the same section is fine
    const quick = [a, send, { ...ack, ts: 12, waitedMs: 2 }, release(L, 1, 15, 15)];
    expect(verdictOf('bounded-ptlock-hold', quick, 1000).ok).toBe(true);
  });
});
