/**
 * Identity on the bus, natively: the runner gives every service instance its own NATS user
 * (random password, permissions from libs/protocol permissions.ts) and the lab's owner its own.
 * A service gone rogue (kvm0, with its own credentials) tries each forgery issue 15 measured —
 * taking and acking hca0's callbacks, unpinning hca0's pins, writing another process's memory,
 * publishing trace events as hca0 — and does no harm (test/support/forgeries.ts); a flood of
 * trace_replay requests makes each service replay at most once a second; fsck is clean after.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TRACE_REPLAY_SUBJECT, natsPermissions } from '@mmlab/protocol';
import { REPLAY_MIN_INTERVAL_MS, connectNats } from '@mmlab/runtime';
import { type TestLab, codeOf, startTestLab, until } from '@mmlab/testing';
import { type ForgeryLab, forgeries } from './support/forgeries';

describe('NATS identities of a native lab', () => {
  let t: TestLab;
  const closers: Array<() => Promise<unknown>> = [];
  let f: ForgeryLab;

  beforeAll(async () => {
    t = await startTestLab({
      mode: 'patched',
      frames: 64,
      cpus: 1,
      mmReplicas: 1,
      subscribers: [
        { name: 'hca0', kind: 'hca', invalidateLatencyMs: 20 },
        { name: 'kvm0', kind: 'kvm' },
      ],
    });
    f = {
      rpc: t.rpc,
      rogueUrl: t.lab.natsUrlAs('kvm0'),
      observerUrl: t.lab.observerUrl!,
      redisUrl: t.lab.redisUrl,
      closers,
    };
  });
  afterAll(async () => {
    for (const c of closers) await c().catch(() => undefined);
    await t?.stop();
  });

  it('gives each instance its own user: no password works for another, none is the default', async () => {
    // the URL the runner gave kvm0 logs in as kvm0 only
    const url = t.lab.natsUrlAs('kvm0');
    const pass = /^nats:\/\/kvm0:([^@]+)@/.exec(url)![1];
    await expect(
      connectNats(url.replace('nats://kvm0:', 'nats://hca0:'), 'intruder'),
    ).rejects.toThrow();
    expect(pass.length).toBeGreaterThanOrEqual(20);
    // and without credentials, nobody gets in
    await expect(connectNats(url.replace(/\/\/[^@]+@/, '//'), 'anonymous')).rejects.toThrow();
    // a subscriber publishes only as itself
    expect(natsPermissions({ user: 'hca0', kind: 'hca', instance: 'hca0' }).publish).toEqual([
      'mmlab.trace.hca.hca0',
      'mmlab.mm.by.hca0.>',
    ]);
  });

  forgeries(() => f);

  it('a flood of trace_replay requests: each service replays at most once a second', async () => {
    const nc = await connectNats(t.lab.natsUrl, 'flood');
    closers.push(() => nc.close());
    const before = await t.rpc.gather('flush', {}, { expect: t.lab.instances.length });
    const started = Date.now();
    for (let i = 0; i < 1000; i++) nc.publish(TRACE_REPLAY_SUBJECT);
    await nc.flush();
    const asked = (r: { replays?: { asked: number } }) => r.replays?.asked ?? 0;
    let after = before;
    await until(async () => {
      after = await t.rpc.gather('flush', {}, { expect: t.lab.instances.length });
      return after.every(
        (a) => asked(a) - asked(before.find((b) => b.instance === a.instance) ?? a) >= 1000,
      );
    }, 'every service got the 1,000 requests');
    // a deferred replay (the one the burst's tail asked for) runs within one interval
    await new Promise((r) => setTimeout(r, REPLAY_MIN_INTERVAL_MS + 200));
    after = await t.rpc.gather('flush', {}, { expect: t.lab.instances.length });
    const windows = Math.ceil((Date.now() - started) / REPLAY_MIN_INTERVAL_MS) + 1;
    for (const a of after) {
      const b = before.find((x) => x.instance === a.instance)!;
      const run = (a.replays?.run ?? 0) - (b.replays?.run ?? 0);
      expect(run, `${a.instance} replays`).toBeGreaterThanOrEqual(1);
      expect(run, `${a.instance} replays`).toBeLessThanOrEqual(windows);
      expect(run).toBeLessThan(10);
    }
    expect(await codeOf(t.rpc.call('observerSync', {}))).toBe('ok');
  });
});
