import { afterEach, describe, expect, it } from 'vitest';
import { LivenessLease, type LivenessStore } from './liveness';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** What SIGSTOP does to a process: nothing of it runs for ms. */
const freeze = (ms: number) => {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // spin
  }
};

function fakeStore(delayMs = 0) {
  const calls: string[] = [];
  const store: LivenessStore = {
    subscriberAlive: async (name) => {
      if (delayMs) await sleep(delayMs);
      calls.push(`alive ${name}`);
    },
    unfence: async (name) => {
      calls.push(`unfence ${name}`);
    },
    isFenced: async () => false,
  };
  return { store, calls };
}

const quiet = { warn: () => undefined };

describe('LivenessLease', () => {
  let lease: LivenessLease | undefined;
  afterEach(() => lease?.stop());

  it('takes the lease before it lifts the fence, and keeps renewing it', async () => {
    const { store, calls } = fakeStore();
    lease = new LivenessLease(store, 'cpu0', 60, quiet);
    await lease.start();
    expect(calls).toEqual(['alive cpu0', 'unfence cpu0']);
    await sleep(100);
    expect(calls.filter((c) => c === 'alive cpu0').length).toBeGreaterThan(2);
    expect(lease.mayHaveLapsed()).toBe(false);
  });

  it('after a pause past its TTL: the lease may have lapsed, so the agent recovers before use', async () => {
    const { store, calls } = fakeStore();
    const lapses: number[] = [];
    lease = new LivenessLease(store, 'cpu0', 60, quiet, {
      onLapsed: () => void lapses.push(calls.length),
    });
    await lease.start();
    freeze(100);
    expect(lease.mayHaveLapsed()).toBe(true);
    calls.length = 0;
    // Two users at once share one recovery: onLapsed, then the lease, then the fence lifted.
    await Promise.all([lease.ensure(), lease.ensure()]);
    expect(lapses).toEqual([0]);
    expect(calls.slice(0, 2)).toEqual(['alive cpu0', 'unfence cpu0']);
    expect(lease.mayHaveLapsed()).toBe(false);
    await lease.ensure();
    expect(lapses).toHaveLength(1);
  });

  it('a renewal answered after the TTL does not count: it may have landed on an expired key', async () => {
    const { store } = fakeStore();
    const slow = fakeStore(90);
    let lapsed = 0;
    lease = new LivenessLease(
      { ...store, subscriberAlive: slow.store.subscriberAlive },
      'cpu0',
      60,
      quiet,
      { onLapsed: () => void lapsed++ },
    );
    await lease.start(); // the take itself is slow: already lapsed when it returns
    expect(lease.mayHaveLapsed()).toBe(true);
    await lease.ensure();
    expect(lapsed).toBe(1);
  });

  it('ensure(true) recovers even when the lease looks alive (memory said we are fenced)', async () => {
    const { store, calls } = fakeStore();
    let lapsed = 0;
    lease = new LivenessLease(store, 'cpu0', 10_000, quiet, { onLapsed: () => void lapsed++ });
    await lease.start();
    calls.length = 0;
    await lease.ensure(true);
    expect(lapsed).toBe(1);
    expect(calls).toEqual(['alive cpu0', 'unfence cpu0']);
  });
});
