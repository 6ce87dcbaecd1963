import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { NotifierSeq } from './notifier_seq';

describe('NotifierSeq (start_account / end_account / retry / completion)', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('a fault retries while an invalidation is counted and after one ended', () => {
    const n = new NotifierSeq();
    const s = n.sequence;
    expect(n.retry(s)).toBe(false);
    n.startAccount();
    expect(n.retry(s)).toBe(true); // in progress: count 1, seq unchanged
    n.endAccount();
    expect(n.notifiersCount).toBe(0);
    expect(n.retry(s)).toBe(true); // ended meanwhile: seq moved
    expect(n.retry(n.sequence)).toBe(false);
    n.bump();
    expect(n.retry(s + 1)).toBe(true);
  });

  it('two overlapping invalidations: the count reaches 0 only at the second end', async () => {
    const n = new NotifierSeq();
    n.startAccount();
    n.startAccount();
    let woken = false;
    const w = n.waitForCompletion(1000).then((ok) => (woken = ok));
    n.endAccount();
    await Promise.resolve();
    expect(woken).toBe(false);
    expect(n.retry(n.sequence)).toBe(true);
    n.endAccount();
    await w;
    expect(woken).toBe(true);
  });

  it('an end with no start of its own (another range) leaves the count wrong', async () => {
    const n = new NotifierSeq();
    n.endAccount(); // count −1: never 0 again by itself
    expect(n.notifiersCount).toBe(-1);
    expect(n.retry(n.sequence)).toBe(true);
    const w = n.waitForCompletion(100);
    vi.advanceTimersByTime(100);
    expect(await w).toBe(false); // times out: nothing completes it
    n.startAccount(); // a later start brings it to 0: faults go on during that invalidation
    expect(n.retry(n.sequence)).toBe(false);
  });

  it('completeAll (release) wakes waiting faults', async () => {
    const n = new NotifierSeq();
    n.startAccount();
    const w = n.waitForCompletion(1000);
    n.completeAll();
    expect(await w).toBe(true);
    expect(await n.waitForCompletion(1000)).toBe(true); // done stays done until the next start
  });

  it('waitPast (the npf work-queue hook) goes on once an invalidation arrived, after its tick', async () => {
    vi.useRealTimers();
    const n = new NotifierSeq();
    const snap = n.snapshot();
    const order: string[] = [];
    const waiting = n.waitPast(snap, 60_000).then(() => order.push('fault goes on'));
    await new Promise((r) => setImmediate(r));
    expect(order).toEqual([]); // nothing arrived: still waiting
    n.startAccount();
    // the invalidation's own microtasks (its umem_mutex) come before the fault
    void Promise.resolve().then(() => order.push('invalidation takes umem_mutex'));
    await waiting;
    expect(order).toEqual(['invalidation takes umem_mutex', 'fault goes on']);
  });
});
