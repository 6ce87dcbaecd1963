import { describe, expect, it } from 'vitest';
import {
  mightSleep,
  mnSend,
  opAcquire,
  opRelease,
  ptlHeld,
  verdictOf,
  violating,
} from './test-util';

const L = 'ptl:0';

describe('no-sleep-under-ptlock', () => {
  it('passes callbacks sent before the PT lock is taken and after it is dropped', () => {
    const v = verdictOf('no-sleep-under-ptlock', [
      mnSend(1, { op: 'X', inv: 'i1', callback: 'invalidate_range_start' }),
      opAcquire('X', L, 1, 2),
      opRelease('X', L, 1, 3),
      mnSend(4, { op: 'X', inv: 'i1', callback: 'invalidate_range_end' }),
      // another op holding a lock at the time does not matter
      opAcquire('Y', L, 2, 5),
      mnSend(6, { op: 'X', inv: 'i2', callback: 'invalidate_page', subscriber: 'hca1' }),
      opRelease('Y', L, 2, 7),
    ]);
    expect(v).toEqual({ name: 'no-sleep-under-ptlock', ok: true, checked: 2, violations: [] });
  });

  it('(a) reports an mn.send whose sender says it held a PT lock', () => {
    const bad = mnSend(5, { op: 'X', inv: 'i9', callback: 'invalidate_page', ptl: L });
    const v = verdictOf('no-sleep-under-ptlock', [mnSend(1, { inv: 'i1' }), bad]);
    expect(v.checked).toBe(2);
    expect(violating(v)).toEqual([[bad]]);
    expect(v.violations[0].message).toBe(
      'invalidate_page of pid 1 (inv i9, to hca0) was outstanding under a PT lock: sent with ptl:0 held (mn.send)',
    );
  });

  it('(b) reports an mn.send by an op holding a PT lock in the trace, whatever it claimed', () => {
    const a = opAcquire('X', L, 3, 1);
    const send = mnSend(2, { op: 'X', inv: 'i1', callback: 'invalidate_page', ptl: null });
    const v = verdictOf('no-sleep-under-ptlock', [a, send, opRelease('X', L, 3, 4)]);
    expect(violating(v)).toEqual([[send, a]]);
    expect(v.violations[0].message).toContain('op X held ptl:0 (token 3) when it sent');
  });

  it('(b) compares timestamps strictly and pairs releases by (pid, lock, token)', () => {
    // acquired at the very ts of the send: not before it
    expect(
      verdictOf('no-sleep-under-ptlock', [opAcquire('X', L, 1, 2), mnSend(2, { op: 'X' })]).ok,
    ).toBe(true);
    // released at the very ts of the send: still held
    const a = opAcquire('X', L, 1, 1);
    const send = mnSend(2, { op: 'X' });
    expect(
      violating(verdictOf('no-sleep-under-ptlock', [a, send, opRelease('X', L, 1, 2)])),
    ).toEqual([[send, a]]);
    // a release of another token does not end the hold
    const v = verdictOf('no-sleep-under-ptlock', [a, opRelease('X', L, 2, 1.5), send]);
    expect(violating(v)).toEqual([[send, a]]);
  });

  it('(c) reports might_sleep, alone or with the sends of its inv', () => {
    const lone = mightSleep(3, { inv: 'i7' });
    const v = verdictOf('no-sleep-under-ptlock', [lone]);
    expect(v.checked).toBe(1);
    expect(violating(v)).toEqual([[lone]]);
    expect(v.violations[0].message).toBe(
      'invalidate_page of pid 1 (inv i7, no subscriber recorded) was outstanding under a PT lock: might_sleep fired with ptl:0 held',
    );

    // with two subscribers sent that callback: evidence for both, no lone violation
    const m = mightSleep(1, { inv: 'i8' });
    const s0 = mnSend(2, { inv: 'i8', subscriber: 'hca0', callback: 'invalidate_page' });
    const s1 = mnSend(2, { inv: 'i8', subscriber: 'hca1', callback: 'invalidate_page' });
    const w = verdictOf('no-sleep-under-ptlock', [m, s0, s1]);
    expect(w.checked).toBe(2);
    expect(violating(w)).toEqual([[m], [m]]);
  });

  it('(d) reports mn.ptl_held found by a subscriber', () => {
    const held = ptlHeld(4, { agent: 'hca1', inv: 'i3' });
    const v = verdictOf('no-sleep-under-ptlock', [
      mnSend(3, { inv: 'i3', subscriber: 'hca1', callback: 'invalidate_page' }),
      held,
    ]);
    expect(v.checked).toBe(1);
    expect(violating(v)).toEqual([[held]]);
    expect(v.violations[0].message).toBe(
      'invalidate_page of pid 1 (inv i3, to hca1) was outstanding under a PT lock: hca1 found mm-0/op1 holding ptl:0 on receipt',
    );
  });

  it('reports one violation per callback with all of its evidence', () => {
    const a = opAcquire('X', L, 1, 1);
    const m = mightSleep(2, { inv: 'i1' });
    const send1 = mnSend(3, { op: 'X', inv: 'i1', callback: 'invalidate_page', ptl: L });
    const send2 = mnSend(5, {
      op: 'X',
      inv: 'i1',
      callback: 'invalidate_page',
      ptl: L,
      attempt: 2,
    });
    const held = ptlHeld(4, { inv: 'i1' });
    const other = mnSend(3, {
      op: 'X',
      inv: 'i1',
      callback: 'invalidate_page',
      subscriber: 'hca1',
    });
    const v = verdictOf('no-sleep-under-ptlock', [send2, held, send1, m, a, other]);
    expect(v.checked).toBe(2);
    expect(violating(v)).toEqual([
      [m, send1, held, send2, a],
      [m, other, a],
    ]);
    expect(v.violations[0].message).toBe(
      'invalidate_page of pid 1 (inv i1, to hca0) was outstanding under a PT lock: ' +
        'sent with ptl:0 held (mn.send); op X held ptl:0 (token 1) when it sent; ' +
        'hca0 found mm-0/op1 holding ptl:0 on receipt; might_sleep fired with ptl:0 held',
    );
  });

  it('passes the callbacks v3.7 sends under the PT lock (change_pte, clear_flush_young, test_young)', () => {
    const v = verdictOf('no-sleep-under-ptlock', [
      opAcquire('X', L, 1, 1),
      mnSend(2, { op: 'X', inv: 'c1', callback: 'change_pte', ptl: L }),
      mnSend(3, { op: 'X', inv: 'c2', callback: 'clear_flush_young', ptl: L }),
      mnSend(4, { op: 'X', inv: 'c3', callback: 'test_young', ptl: L }),
      ptlHeld(5, { inv: 'c1', callback: 'change_pte' }),
      opRelease('X', L, 1, 6),
    ]);
    expect(v).toEqual({ name: 'no-sleep-under-ptlock', ok: true, checked: 0, violations: [] });
  });

  it('still reports invalidate_page sent under the lock beside an exempt change_pte (v3.6 fallback)', () => {
    const a = opAcquire('X', L, 1, 1);
    const ok = mnSend(2, { op: 'X', inv: 'c1', callback: 'change_pte', ptl: L });
    const bad = mnSend(2, {
      op: 'X',
      inv: 'c1',
      callback: 'invalidate_page',
      subscriber: 'hca1',
      ptl: L,
    });
    const v = verdictOf('no-sleep-under-ptlock', [a, ok, bad, opRelease('X', L, 1, 3)]);
    expect(v.checked).toBe(1);
    expect(violating(v)).toEqual([[bad, a]]);
  });
});
