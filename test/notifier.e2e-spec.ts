/**
 * Notifiers across the network with a real HCA subscriber: a slow device under the patched
 * and the legacy discipline, a subscriber killed mid-invalidation, a paused one.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { NatsConnection } from 'nats';
import { type EventOf, type Mode, PAGE_SIZE, RequestPacket, type TraceKind } from '@mmlab/protocol';
import { checkInvariants } from '@mmlab/checker';
import { type LabConfig, stopProcess } from '@mmlab/runner';
import { type TestLab, codeOf, startTestLab, until } from '@mmlab/testing';

let env: TestLab | null = null;

async function start(cfg: LabConfig): Promise<TestLab> {
  env = await startTestLab(cfg, { rpcTimeoutMs: 30_000 });
  return env;
}

afterEach(async () => {
  if (!env) return;
  await env.stop();
  env = null;
});

/**
 * One lab for the cases of a describe block that differ only in what mm reads from its
 * environment (MMLAB_MODE, MMLAB_DISPATCH: mm is their only reader), started before the block
 * and stopped (fsck) after it. use(env) restarts the mm replicas with the case's variables
 * when they differ (every replica stopped before any starts: a lab never runs two modes).
 */
function sharedLab(cfg: LabConfig) {
  let shared: TestLab | undefined;
  beforeAll(async () => {
    shared = await startTestLab(cfg, { rpcTimeoutMs: 30_000 });
  });
  afterAll(async () => {
    await shared?.stop();
  });
  return async (mmEnv: Record<string, string>): Promise<TestLab> => {
    const { lab } = shared!;
    const stale = lab.specs
      .filter((s) => s.app === 'mm' && Object.entries(mmEnv).some(([k, v]) => s.env[k] !== v))
      .map((s) => s.instance);
    await Promise.all(stale.map((i) => stopProcess(lab.proc(i))));
    await Promise.all(stale.map((i) => lab.restart(i, mmEnv)));
    return shared!;
  };
}

/** A process with `pages` pages written by cpu0, and an ODP MR of hca0 over them, mapped. */
async function mappedOdpMr(e: TestLab, pages: number, access: Array<'read' | 'write'>) {
  const { pid } = await e.rpc.call('processCreate', {});
  const { addr } = await e.rpc.call('mmap', { pid, pages, prot: 'rw' });
  for (let p = 0; p < pages; p++)
    await e.rpc.call(
      'cpuAccess',
      { pid, addr: addr + p * PAGE_SIZE, op: 'write', value: p + 1 },
      { id: 0 },
    );
  const { mr } = await e.rpc.call(
    'hcaRegMr',
    { pid, addr, pages, odp: true, access },
    { id: 'hca0' },
  );
  for (let p = 0; p < pages; p++)
    expect(
      (await e.rpc.call('hcaRdmaRead', { mr, addr: addr + p * PAGE_SIZE }, { id: 'hca0' })).value,
    ).toBe(p + 1);
  return { pid, addr, mr };
}

const maxHold = (events: EventOf<'ptl.release'>[]) => Math.max(0, ...events.map((e) => e.heldMs));

describe('an HCA whose invalidation takes 1 s', () => {
  const holds: Partial<Record<Mode, number>> = {};

  it.each<Mode>(['patched', 'legacy'])('%s: COW of a page the HCA maps', async (mode) => {
    const e = await start({
      mode,
      frames: 64,
      cpus: 1,
      mmReplicas: 2,
      softlockupMs: 10_000,
      observer: false,
      subscribers: [{ name: 'hca0', kind: 'hca', invalidateLatencyMs: 1000 }],
    });
    const { pid, addr, mr } = await mappedOdpMr(e, 1, ['read']);
    await e.rpc.call('fork', { pid });
    // The fork write-protected the page (range start: the HCA dropped it) and the HCA maps it
    // again; the parent's write now copies it: do_wp_page notifies the HCA — v3.7 with a range
    // start/end around the PT lock, v3.6 with set_pte_at_notify under it (the HCA has no
    // change_pte, so it gets invalidate_page there).
    expect((await e.rpc.call('hcaRdmaRead', { mr, addr }, { id: 'hca0' })).value).toBe(1);
    const before = e.trace.events.length;
    await e.rpc.call('cpuAccess', { pid, addr, op: 'write', value: 2 }, { id: 0 });
    expect((await e.rpc.call('hcaRdmaRead', { mr, addr }, { id: 'hca0' })).value).toBe(2);
    await e.settled();
    const events = e.trace.events;
    const cow = events.slice(before);
    const sent = cow
      .filter((x): x is EventOf<'mn.send'> => x.kind === 'mn.send' && x.subscriber === 'hca0')
      .map((x) => x.callback);
    if (mode === 'patched') {
      expect(sent).toEqual(['invalidate_range_start', 'invalidate_range_end']);
      const rs = cow.find((x) => x.kind === 'mn.range_start')!;
      expect(rs).toMatchObject({ start: addr, end: addr + PAGE_SIZE, event: 'clear' });
      expect(cow.some((x) => x.kind === 'mn.page')).toBe(false);
    } else {
      expect(sent).toEqual(['invalidate_page']);
      expect(cow.some((x) => x.kind === 'mn.range_start')).toBe(false);
    }
    const verdict = checkInvariants(events, { softlockupMs: 10_000 }).find(
      (v) => v.name === 'no-sleep-under-ptlock',
    )!;
    // the COW's own PT-lock holds (not the fork's or the lab's other work before it)
    holds[mode] = maxHold(cow.filter((x): x is EventOf<'ptl.release'> => x.kind === 'ptl.release'));
    if (mode === 'patched') {
      expect(verdict.ok).toBe(true);
      expect(events.filter((x) => x.kind === 'might_sleep' || x.kind === 'mn.ptl_held')).toEqual(
        [],
      );
    } else {
      expect(verdict.ok).toBe(false);
      // Caught twice, independently: by mm's own guard and by the HCA looking in Redis.
      expect(events.some((x) => x.kind === 'might_sleep' && x.callback === 'invalidate_page')).toBe(
        true,
      );
      expect(events.some((x) => x.kind === 'mn.ptl_held' && x.agent === 'hca0')).toBe(true);
      // The lock was held across the device's 1 s wait.
      expect(holds.legacy).toBeGreaterThanOrEqual(900);
    }
  });

  it('holds PT locks in patched mode for a small fraction of what legacy holds them', () => {
    expect(holds.patched).toBeDefined();
    expect(holds.legacy).toBeDefined();
    expect(holds.patched! * 10).toBeLessThan(holds.legacy!);
  });
});

describe('a subscriber that dies or stops', () => {
  const cfg = (latency: number, leaseMs: number): LabConfig => ({
    mode: 'patched',
    frames: 64,
    cpus: 1,
    mmReplicas: 2,
    observer: false,
    subscribers: [{ name: 'hca0', kind: 'hca', invalidateLatencyMs: latency }],
    env: { MMLAB_CALLBACK_TIMEOUT_MS: '300', MMLAB_SUBSCRIBER_LEASE_MS: String(leaseMs) },
  });

  it('killed mid-invalidation: mm fences it and goes on, no PT lock left held', async () => {
    const e = await start(cfg(60_000, 1500));
    const { pid, addr } = await mappedOdpMr(e, 2, ['read', 'write']);
    const free0 = (await e.rpc.call('meminfo', {})).free;
    const munmap = e.rpc.call('munmap', { pid, addr, pages: 2 });
    await e.trace.next((x) => x.kind === 'mn.recv' && x.callback === 'invalidate_range_start');
    await e.lab.kill('hca0');
    expect(await munmap).toEqual({ zapped: 2, freed: 2 });
    expect((await e.rpc.call('meminfo', {})).free).toBe(free0 + 2);
    const fenced = await e.trace.next<EventOf<'mn.fenced'>>((x) => x.kind === 'mn.fenced');
    expect(fenced.subscriber).toBe('hca0');
    expect(await e.store.mnSubscribers(pid)).toEqual([]);
    expect(await e.store.redis.keys('*:ptl:*')).toEqual([]);
    // A restarted HCA is a new device: it may register again.
    await e.lab.restart('hca0');
    const again = await mappedOdpMr(e, 1, ['read']);
    expect(again.mr).toBeGreaterThan(0);
  });

  it('paused for longer than a callback attempt but within its lease: mm waits for it', async () => {
    const e = await start(cfg(0, 20_000));
    const { pid, addr, mr } = await mappedOdpMr(e, 1, ['read', 'write']);
    e.lab.signal('hca0', 'SIGSTOP');
    const munmap = e.rpc.call('munmap', { pid, addr, pages: 1 });
    await e.trace.next((x) => x.kind === 'mn.send' && x.attempt >= 3); // timed out twice, resent
    e.lab.signal('hca0', 'SIGCONT');
    expect(await munmap).toEqual({ zapped: 1, freed: 1 });
    expect(e.trace.events.some((x) => x.kind === 'mn.fenced')).toBe(false);
    expect(
      e.trace.events.some((x) => x.kind === 'mn.ack' && x.callback === 'invalidate_range_start'),
    ).toBe(true);
    expect(await codeOf(e.rpc.call('hcaRdmaRead', { mr, addr }, { id: 'hca0' }))).toBe('EFAULT');
  });

  it('paused past its lease: fenced, and its device accesses after it resumes are refused', async () => {
    const e = await start(cfg(0, 1500));
    const { pid, addr, mr } = await mappedOdpMr(e, 2, ['read', 'write']);
    e.lab.signal('hca0', 'SIGSTOP');
    expect(await e.rpc.call('munmap', { pid, addr, pages: 1 })).toEqual({ zapped: 1, freed: 1 });
    await e.trace.next((x) => x.kind === 'mn.fenced' && x.subscriber === 'hca0');
    e.lab.signal('hca0', 'SIGCONT');
    // Page 1 is still in the HCA's table: the DMA is refused at the memory, and reported.
    expect(
      await codeOf(
        e.rpc.call('hcaRdmaWrite', { mr, addr: addr + PAGE_SIZE, value: 9 }, { id: 'hca0' }),
      ),
    ).toBe('ENODEV');
    await until(
      () => e.trace.events.some((x) => x.kind === 'access.refused' && x.agent === 'hca0'),
      'access.refused',
    );
    expect(
      (await e.rpc.call('cpuAccess', { pid, addr: addr + PAGE_SIZE, op: 'read' }, { id: 0 })).value,
    ).toBe(2);
  });
});

describe('several HCAs on one process', () => {
  const use = sharedLab({
    mode: 'patched',
    frames: 64,
    cpus: 1,
    mmReplicas: 1,
    observer: false,
    dispatch: 'parallel',
    subscribers: [
      { name: 'hca0', kind: 'hca', invalidateLatencyMs: 300 },
      { name: 'hca1', kind: 'hca', invalidateLatencyMs: 300 },
    ],
  });

  it.each(['parallel', 'serial'] as const)(
    '%s dispatch: each HCA is its own subscriber',
    async (dispatch) => {
      const e = await use({ MMLAB_DISPATCH: dispatch });
      const from = e.trace.events.length; // the case's own events (the lab served the last case)
      const { pid } = await e.rpc.call('processCreate', {});
      const { addr } = await e.rpc.call('mmap', { pid, pages: 1, prot: 'rw' });
      await e.rpc.call('cpuAccess', { pid, addr, op: 'write', value: 3 }, { id: 0 });
      for (const hca of ['hca0', 'hca1']) {
        const { mr } = await e.rpc.call(
          'hcaRegMr',
          { pid, addr, pages: 1, odp: true, access: ['read'] },
          { id: hca },
        );
        expect((await e.rpc.call('hcaRdmaRead', { mr, addr }, { id: hca })).value).toBe(3);
      }
      expect(await e.store.mnSubscribers(pid)).toEqual(['hca0', 'hca1']);
      await e.rpc.call('munmap', { pid, addr, pages: 1 });
      await e.settled();
      const events = e.trace.events.slice(from);
      const rs = events.find((x) => x.kind === 'mn.range_start')!;
      const ofStart = events.filter(
        (x): x is EventOf<'mn.send'> | EventOf<'mn.ack'> =>
          (x.kind === 'mn.send' || x.kind === 'mn.ack') &&
          x.inv === rs.inv &&
          x.callback === 'invalidate_range_start',
      );
      const order = ofStart.map((x) => `${x.kind === 'mn.send' ? 'send' : 'ack'} ${x.subscriber}`);
      if (dispatch === 'parallel')
        expect(order.slice(0, 2).every((o) => o.startsWith('send'))).toBe(true);
      else expect(order).toEqual(['send hca0', 'ack hca0', 'send hca1', 'ack hca1']);
      for (const hca of ['hca0', 'hca1'])
        expect(
          events.some((x) => x.kind === 'smap.clear' && x.agent === hca && x.addr === addr),
        ).toBe(true);
    },
  );
});

/**
 * A subscriber with change_pte (KVM's kind; the HCA of 3.19 has none), played by the test on
 * NATS: it acks every callback at once, except change_pte after sleepMs — it sleeps in a
 * callback it must answer without sleeping.
 */
function sleepyChangePteSubscriber(nc: NatsConnection, name: string, sleepMs: number) {
  const got: string[] = [];
  const sub = nc.subscribe(`mmlab.sub.${name}.>`, {
    callback: (_err, msg) => {
      const callback = msg.subject.slice(msg.subject.lastIndexOf('.') + 1);
      const req = RequestPacket.parse(JSON.parse(Buffer.from(msg.data).toString('utf8')));
      const inv = (req.data as { inv: string }).inv;
      got.push(callback);
      const reply = () =>
        msg.respond(JSON.stringify({ id: req.id, response: { inv }, isDisposed: true }));
      if (callback === 'change_pte') setTimeout(reply, sleepMs);
      else reply();
    },
  });
  return { got, stop: () => sub.unsubscribe() };
}

describe('change_pte is sent under the PT lock (set_pte_at_notify, v3.7 and v3.6)', () => {
  const softlockupMs = 300;
  const use = sharedLab({
    mode: 'patched',
    frames: 32,
    cpus: 1,
    mmReplicas: 1,
    softlockupMs,
    observer: false,
  });

  it.each<Mode>(['patched', 'legacy'])(
    '%s: not a sleep-under-ptlock violation, but a subscriber sleeping in it holds the lock long',
    async (mode) => {
      const e = await use({ MMLAB_MODE: mode });
      const from = e.trace.events.length; // the case's own events (the lab served the last case)
      const sub = sleepyChangePteSubscriber(e.nc, 'kvm0', 2 * softlockupMs);
      try {
        await e.store.subscriberAlive('kvm0', 60_000);
        const { pid } = await e.rpc.call('processCreate', {});
        const { addr } = await e.rpc.call('mmap', { pid, pages: 1, prot: 'rw' });
        await e.rpc.call('cpuAccess', { pid, addr, op: 'write', value: 1 }, { id: 0 });
        await e.rpc.call('fork', { pid });
        // registered with every 2012 callback (no ops given): change_pte included
        await e.rpc.call('notifierRegister', { pid, subscriber: 'kvm0' });
        await e.rpc.call('cpuAccess', { pid, addr, op: 'write', value: 2 }, { id: 0 });
        await e.settled();
        const events = e.trace.events.slice(from);
        const send = events.find(
          (x): x is EventOf<'mn.send'> => x.kind === 'mn.send' && x.callback === 'change_pte',
        )!;
        expect(send.ptl).not.toBeNull(); // sent with the PT lock held
        const ofCow = events.filter((x) => 'op' in x && x.op === send.op);
        const at = (k: TraceKind) => ofCow.findIndex((x) => x.kind === k);
        const sentAt = ofCow.indexOf(send);
        const ackedAt = ofCow.findIndex((x) => x.kind === 'mn.ack' && x.callback === 'change_pte');
        // the order v3.7 and v3.6 share: lock, (clear), change_pte answered, unlock
        expect(at('ptl.acquire')).toBeLessThan(sentAt);
        expect(sentAt).toBeLessThan(ackedAt);
        expect(ackedAt).toBeLessThan(at('ptl.release'));
        if (mode === 'patched') {
          // v3.7: change_pte before set_pte_at, inside the range start/end of 6bdb913f
          expect(at('mn.range_start')).toBeLessThan(at('ptl.acquire'));
          expect(sentAt).toBeLessThan(at('pte.set'));
          expect(at('ptl.release')).toBeLessThan(at('mn.range_end'));
          expect(sub.got).toEqual(['invalidate_range_start', 'change_pte', 'invalidate_range_end']);
        } else {
          // v3.6: set_pte_at first, then change_pte; no range
          expect(at('pte.set')).toBeLessThan(sentAt);
          expect(at('mn.range_start')).toBe(-1);
          expect(sub.got).toEqual(['change_pte']);
        }
        expect(events.filter((x) => x.kind === 'might_sleep')).toEqual([]);
        const verdicts = checkInvariants(events, { softlockupMs });
        expect(verdicts.find((v) => v.name === 'no-sleep-under-ptlock')!.ok).toBe(true);
        const hold = verdicts.find((v) => v.name === 'bounded-ptlock-hold')!;
        expect(
          hold.violations.some((v) =>
            v.events.some((x) => x.kind === 'ptl.acquire' && 'op' in x && x.op === send.op),
          ),
        ).toBe(true);
      } finally {
        sub.stop();
      }
    },
  );
});

describe('mm_has_notifiers (v3.7): invalidations only for an mm with a subscriber', () => {
  it('munmap, mprotect, mremap, madvise, fork, COW and exit: ranges for the mm hca0 is on, no notifier event for the other', async () => {
    const e = await start({
      mode: 'patched',
      frames: 64,
      cpus: 1,
      mmReplicas: 1,
      observer: false,
      subscribers: [{ name: 'hca0', kind: 'hca' }],
    });
    const on = await mappedOdpMr(e, 4, ['read']);
    const bare = (await e.rpc.call('processCreate', {})).pid;
    const bareAddr = (await e.rpc.call('mmap', { pid: bare, pages: 4, prot: 'rw' })).addr;
    for (let p = 0; p < 4; p++)
      await e.rpc.call(
        'cpuAccess',
        { pid: bare, addr: bareAddr + p * PAGE_SIZE, op: 'write', value: p + 1 },
        { id: 0 },
      );
    expect(await e.store.mnSubscribers(on.pid)).toEqual(['hca0']);
    expect(await e.store.mnSubscribers(bare)).toEqual([]);

    /** The same work on each: fork, a COW, mprotect, madvise, mremap (moving), munmap, exits. */
    const work = async (pid: number, addr: number) => {
      const page = (i: number) => addr + i * PAGE_SIZE;
      const { pid: child } = await e.rpc.call('fork', { pid });
      await e.rpc.call('cpuAccess', { pid, addr: page(0), op: 'write', value: 9 }, { id: 0 });
      await e.rpc.call('mprotect', { pid, addr: page(1), pages: 1, prot: 'r' });
      await e.rpc.call('madvise', { pid, addr: page(2), pages: 1, advice: 'dontneed' });
      // page 3 moves away (a new VMA, since [addr, +4) cannot grow in place), and is unmapped
      const moved = await e.rpc.call('mremap', { pid, addr: page(3), pages: 1, newPages: 2 });
      expect(moved.moved).toBe(1);
      await e.rpc.call('munmap', { pid, addr: moved.addr, pages: 2 });
      await e.rpc.call('exit', { pid: child });
      await e.rpc.call('exit', { pid });
      return { child, moved: moved.addr };
    };
    const from = e.trace.events.length;
    const a = await work(on.pid, on.addr);
    const b = await work(bare, bareAddr);
    await e.settled();
    const events = e.trace.events.slice(from);
    const mnOf = (pid: number) =>
      events.filter((x) => x.kind.startsWith('mn.') && (x as { pid?: number }).pid === pid);

    // the mm without a subscriber (and its child): nothing recorded, traced or sent
    expect(mnOf(bare)).toEqual([]);
    expect(mnOf(b.child)).toEqual([]);
    expect(mnOf(a.child)).toEqual([]);
    // the mm with one: every range, paired with the same values, then the release at exit
    const starts = events.filter(
      (x): x is EventOf<'mn.range_start'> => x.kind === 'mn.range_start' && x.pid === on.pid,
    );
    const page = (i: number) => on.addr + i * PAGE_SIZE;
    expect(starts.map((x) => [x.event, x.start, x.end])).toEqual([
      ['protection_page', on.addr, page(4)], // fork: copy_page_range write-protects the VMA
      ['clear', page(0), page(1)], // the COW (do_wp_page)
      ['protection_vma', page(1), page(2)], // mprotect
      ['clear', page(2), page(3)], // madvise(DONTNEED)
      ['unmap', page(3), page(4)], // mremap: one constant range over the old place
      ['unmap', a.moved, a.moved + 2 * PAGE_SIZE], // munmap
    ]);
    const ends = new Map(
      events
        .filter((x): x is EventOf<'mn.range_end'> => x.kind === 'mn.range_end')
        .map((x) => [x.inv, x]),
    );
    for (const s of starts)
      expect(ends.get(s.inv)).toMatchObject({ pid: on.pid, start: s.start, end: s.end });
    expect(mnOf(on.pid).filter((x) => x.kind === 'mn.release')).toHaveLength(1);
  });
});
