import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { MmlabError } from '@mmlab/protocol';
import { IntervalNotifier } from './mmu_interval_notifier';

const codeOf = async (p: Promise<unknown>) => {
  try {
    await p;
    return 'ok';
  } catch (e) {
    return e instanceof MmlabError ? e.code : String(e);
  }
};

describe('IntervalNotifier (read_begin / read_retry / set_seq)', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('bumps the sequence at every start (set_seq, unconditional) and at change_pte, never at end', () => {
    const n = new IntervalNotifier();
    expect(n.sequence).toBe(0);
    expect(n.start('i1', 0, 4096)).toBe(1);
    expect(n.start('i2', 8192, 12288)).toBe(2);
    expect(n.end('i1')).toBe(true);
    expect(n.sequence).toBe(2);
    expect(n.setSeq()).toBe(3);
    expect(n.end('nope')).toBe(false);
  });

  it('tracks active ranges by key, end exclusive; a repeated start keeps its range', () => {
    const n = new IntervalNotifier();
    n.start('i1', 4096, 8192);
    n.start('i1', 0, 1 << 20);
    expect(n.overlapsActive(0, 4096)).toBe(false);
    expect(n.overlapsActive(8192, 12288)).toBe(false);
    expect(n.overlapsActive(4095, 4097)).toBe(true);
    n.end('i1');
    expect(n.overlapsActive(4096, 8192)).toBe(false);
    expect(n.activeRanges.size).toBe(0);
  });

  it('read_begin returns at once without an overlapping invalidation', async () => {
    const n = new IntervalNotifier();
    n.start('other', 1 << 20, 2 << 20);
    expect(await n.readBegin(0, 4096, Date.now() + 1000)).toBe(1);
  });

  it('read_begin waits for the overlapping invalidation to end, then snapshots the seq', async () => {
    const n = new IntervalNotifier();
    n.start('i1', 0, 8192);
    let got: number | undefined;
    const p = n.readBegin(4096, 8192, Date.now() + 1000).then((s) => (got = s));
    await vi.advanceTimersByTimeAsync(100);
    expect(got).toBeUndefined();
    n.start('i2', 4096, 8192); // a second one over the same page: still waiting after i1 ends
    n.end('i1');
    await vi.advanceTimersByTimeAsync(1);
    expect(got).toBeUndefined();
    n.end('i2');
    await p;
    expect(got).toBe(2);
  });

  it('read_begin gives up with EAGAIN at the deadline', async () => {
    const n = new IntervalNotifier();
    n.start('stuck', 0, 4096);
    const p = codeOf(n.readBegin(0, 4096, Date.now() + 500));
    await vi.advanceTimersByTimeAsync(499);
    await vi.advanceTimersByTimeAsync(2);
    expect(await p).toBe('EAGAIN');
  });

  it('read_retry: the seq moved, or an overlapping invalidation is active', () => {
    const n = new IntervalNotifier();
    const s = n.sequence;
    expect(n.readRetry(s, 0, 4096)).toBe(false);
    n.start('far', 1 << 20, 2 << 20); // any start moves the (per-mm) seq: a spurious retry
    expect(n.readRetry(s, 0, 4096)).toBe(true);
    const s2 = n.sequence;
    expect(n.readRetry(s2, 0, 4096)).toBe(false);
    n.end('far');
    expect(n.readRetry(s2, 0, 4096)).toBe(false); // end alone does not
    n.start('near', 0, 4096);
    n.end('near');
    expect(n.readRetry(s2, 0, 4096)).toBe(true); // started and ended in between
  });

  it('release fails waiting and later faults with EFAULT; revive lets them work again', async () => {
    const n = new IntervalNotifier();
    n.start('i1', 0, 4096);
    const waiting = codeOf(n.readBegin(0, 4096, Date.now() + 1000));
    const s = n.sequence;
    n.release();
    expect(await waiting).toBe('EFAULT');
    expect(await codeOf(n.readBegin(1 << 20, 2 << 20, Date.now() + 1000))).toBe('EFAULT');
    expect(n.readRetry(s, 1 << 20, 2 << 20)).toBe(true);
    n.revive();
    n.end('i1');
    expect(await n.readBegin(0, 4096, Date.now() + 1000)).toBe(n.sequence);
  });

  it('waitSeqPast (the npf work-queue hook) goes on once an invalidation arrived, after its tick', async () => {
    vi.useRealTimers();
    const n = new IntervalNotifier();
    const seq = n.sequence;
    const order: string[] = [];
    const waiting = n.waitSeqPast(seq, 60_000).then(() => order.push('fault goes on'));
    await new Promise((r) => setImmediate(r));
    expect(order).toEqual([]); // nothing arrived: still waiting
    n.start('inv1', 0, 4096);
    // the invalidation's own microtasks (its umem_mutex) come before the fault
    void Promise.resolve().then(() => order.push('invalidation takes umem_mutex'));
    await waiting;
    expect(order).toEqual(['invalidation takes umem_mutex', 'fault goes on']);
  });
});
