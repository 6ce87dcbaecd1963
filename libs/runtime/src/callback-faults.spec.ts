import { describe, expect, it } from 'vitest';
import { MmlabError, type MnCallback, type SubFault, type TraceEvent } from '@mmlab/protocol';
import { CallbackFaults, type ZombieLease } from './callback-faults';
import { ReplyControl, runWithReply } from './nest';
import { Tracer } from './tracer';

/** A CallbackFaults whose sleeps, kill and lease are recorded instead of done. */
function setup(opts: { seed?: number; agent?: string } = {}) {
  const events: TraceEvent[] = [];
  const tracer = new Tracer(null, 'hca', opts.agent ?? 'hca0');
  tracer.tap((e) => events.push(e));
  const slept: number[] = [];
  const calls: string[] = [];
  let fence: () => void = () => {};
  const lease: ZombieLease = {
    expire: () => {
      calls.push('expire');
      return new Promise<void>((r) => (fence = r));
    },
    resume: () => calls.push('resume'),
  };
  const faults = new CallbackFaults({
    agent: opts.agent ?? 'hca0',
    seed: opts.seed ?? 1,
    tracer: {
      emit: (e) => tracer.emit(e),
      flush: async () => {
        calls.push('flush');
      },
    },
    lease,
    kill: () => calls.push('kill'),
    sleep: async (ms) => {
      slept.push(ms);
    },
  });
  const fired = () =>
    events.flatMap((e) => (e.kind === 'sub.fault' ? [`${e.fault} ${e.callback} ${e.inv}`] : []));
  /** One callback as a request: its work (calls stall first) and the reply it would get. */
  const callback = async (cb: MnCallback, inv: string, work: () => unknown = () => inv) => {
    const reply = new ReplyControl();
    const result = await runWithReply(reply, () =>
      faults.around(cb, inv, async (stall) => {
        await stall();
        return work();
      }),
    );
    return { result, reply };
  };
  return { faults, events, slept, calls, fired, callback, fence: () => fence() };
}

/** Has p settled after every pending microtask and timer of this tick ran? */
const settled = async (p: Promise<unknown>): Promise<boolean> => {
  let done = false;
  void p.then(
    () => (done = true),
    () => (done = true),
  );
  await new Promise((r) => setTimeout(r, 0));
  return done;
};

const F = (f: SubFault): SubFault => f;

describe('CallbackFaults', () => {
  it('healthy: the work runs, the reply goes once, nothing fires', async () => {
    const { callback, fired, slept } = setup();
    const { result, reply } = await callback('invalidate_range_start', 'i1');
    expect(result).toBe('i1');
    expect([reply.isDropped, reply.copiesToSend]).toEqual([false, 1]);
    expect(fired()).toEqual([]);
    expect(slept).toEqual([]);
  });

  it('filters by callback: latency on invalidate_range_start only', async () => {
    const { faults, callback, fired, slept } = setup();
    faults.set([F({ fault: 'latency', distribution: 30, callbacks: ['invalidate_range_start'] })]);
    await callback('invalidate_range_start', 'i1');
    await callback('invalidate_range_end', 'i1');
    await callback('invalidate_page', 'i2');
    expect(fired()).toEqual(['latency invalidate_range_start i1']);
    expect(slept).toEqual([30]);
  });

  it('seeded latency is reproducible: same seed and agent, same draws; another seed, others', async () => {
    const draws = async (seed: number, agent = 'hca0') => {
      const s = setup({ seed, agent });
      s.faults.set([F({ fault: 'latency', distribution: 'uniform:10:1000', jitterMs: 50 })]);
      for (let i = 0; i < 20; i++) await s.callback('invalidate_range_start', `i${i}`);
      return s.slept;
    };
    const a = await draws(7);
    expect(a).toHaveLength(20);
    expect(Math.min(...a)).toBeGreaterThanOrEqual(10);
    expect(Math.max(...a)).toBeLessThan(1050);
    expect(await draws(7)).toEqual(a);
    expect(await draws(8)).not.toEqual(a);
    expect(await draws(7, 'hca1')).not.toEqual(a);
  });

  it('hang: the work waits until the fault is removed, then runs; a new list without it heals', async () => {
    const { faults, callback, fired } = setup();
    faults.set([F({ fault: 'hang', callbacks: ['invalidate_range_start'] })]);
    let ran = 0;
    const hung = callback('invalidate_range_start', 'i1', () => ++ran);
    expect(await settled(hung)).toBe(false);
    expect(ran).toBe(0);
    // another callback is not hung; re-setting the same hang keeps this one hung
    await callback('invalidate_range_end', 'i1');
    faults.set([F({ fault: 'hang' })]);
    expect(await settled(hung)).toBe(false);
    faults.set([F({ fault: 'dup-ack', callbacks: ['release'] })]);
    expect((await hung).result).toBe(1);
    expect(fired()).toEqual(['hang invalidate_range_start i1']);
    // [] heals a hang on every callback
    faults.set([F({ fault: 'hang' })]);
    const h2 = callback('test_young', 'i2');
    expect(await settled(h2)).toBe(false);
    expect(faults.set([])).toEqual([]);
    expect((await h2).result).toBe('i2');
  });

  it('drop-ack: only the first reply of each (callback, inv) is dropped; the work is not redone here', async () => {
    const { faults, callback, fired } = setup();
    faults.set([F({ fault: 'drop-ack' })]);
    const first = await callback('invalidate_range_start', 'i1');
    const resend = await callback('invalidate_range_start', 'i1');
    const end = await callback('invalidate_range_end', 'i1');
    const other = await callback('invalidate_range_start', 'i2');
    expect([first, resend, end, other].map((c) => c.reply.isDropped)).toEqual([
      true,
      false,
      true,
      true,
    ]);
    expect(fired()).toEqual([
      'drop-ack invalidate_range_start i1',
      'drop-ack invalidate_range_end i1',
      'drop-ack invalidate_range_start i2',
    ]);
    let sent = 0;
    await first.reply.send(() => sent++);
    await resend.reply.send(() => sent++);
    expect(sent).toBe(1);
  });

  it('dup-ack: every reply is sent twice', async () => {
    const { faults, callback, fired } = setup();
    faults.set([F({ fault: 'dup-ack' })]);
    const a = await callback('invalidate_page', 'i1');
    const b = await callback('invalidate_page', 'i1');
    let sent = 0;
    await a.reply.send(() => sent++);
    await b.reply.send(() => sent++);
    expect(sent).toBe(4);
    expect(fired()).toHaveLength(2);
  });

  it('late-ack: the lease stops, the reply is held until mm fenced us; a heal renews (fence or not)', async () => {
    const s = setup();
    s.faults.set([F({ fault: 'late-ack' })]);
    const { result, reply } = await s.callback('invalidate_range_start', 'i1');
    expect(result).toBe('i1'); // the work is done, only the reply waits
    expect(s.calls).toEqual(['expire']);
    let sent = 0;
    const sending = reply.send(() => sent++);
    expect(await settled(sending)).toBe(false);
    s.fence(); // mm fenced us: the reply goes (to nobody)
    await sending;
    expect(sent).toBe(1);
    expect(s.fired()).toEqual(['late-ack invalidate_range_start i1']);
    s.faults.set([]);
    expect(s.calls).toEqual(['expire', 'resume']);

    // healed before the fence: the held reply goes at once
    const t = setup();
    t.faults.set([F({ fault: 'late-ack' })]);
    const held = await t.callback('invalidate_range_end', 'i2');
    let n = 0;
    const p = held.reply.send(() => n++);
    expect(await settled(p)).toBe(false);
    t.faults.set([F({ fault: 'dup-ack', callbacks: ['release'] })]);
    await p;
    expect(n).toBe(1);
    expect(t.calls).toEqual(['expire', 'resume']);
  });

  it('crash: after the work, the event flushed, then kill; the ack never comes', async () => {
    const { faults, callback, fired, calls } = setup();
    faults.set([F({ fault: 'crash', callbacks: ['invalidate_range_start'] })]);
    let worked = false;
    const c = callback('invalidate_range_start', 'i1', () => (worked = true));
    expect(await settled(c)).toBe(false);
    expect(worked).toBe(true);
    expect(calls).toEqual(['flush', 'kill']);
    expect(fired()).toEqual(['crash invalidate_range_start i1']);
    expect((await callback('invalidate_range_end', 'i1')).result).toBe('i1');
  });

  it('reply faults need a request: outside one they do not fire', async () => {
    const { faults, fired } = setup();
    faults.set([F({ fault: 'drop-ack' })]);
    expect(await faults.around('release', 'i1', async () => 5)).toBe(5);
    expect(fired()).toEqual([]);
  });

  it('bad input is a typed error and changes nothing', async () => {
    const { faults } = setup();
    const before = faults.set([F({ fault: 'dup-ack' })]);
    const codeOf = (f: () => unknown) => {
      try {
        f();
        return 'ok';
      } catch (e) {
        return e instanceof MmlabError ? e.code : String(e);
      }
    };
    expect(codeOf(() => faults.set([{ fault: 'hang' }, { fault: 'explode' }]))).toBe('EBADMSG');
    expect(codeOf(() => faults.set([{ fault: 'latency' }]))).toBe('EBADMSG');
    expect(codeOf(() => faults.set([{ fault: 'hang', distribution: 5 }]))).toBe('EBADMSG');
    expect(
      codeOf(() =>
        faults.set([{ fault: 'hang' }, { fault: 'latency', distribution: 'uniform:1e3:2e3' }]),
      ),
    ).toBe('EBADMSG');
    expect(faults.active).toEqual(before);
  });
});

describe('ReplyControl', () => {
  it('sends after every hold settles (even a rejected one), n times, or never once dropped', async () => {
    const c = new ReplyControl();
    let release!: () => void;
    c.holdUntil(new Promise<void>((r) => (release = r)));
    c.holdUntil(Promise.reject(new Error('x')));
    c.copies(3);
    let sent = 0;
    const p = c.send(() => sent++);
    expect(await settled(p)).toBe(false);
    release();
    await p;
    expect(sent).toBe(3);
    const d = new ReplyControl();
    d.drop();
    d.copies(2);
    await d.send(() => sent++);
    expect(sent).toBe(3);
  });
});
