import { describe, expect, it } from 'vitest';
import { MmlabError, type ReqParsed, type TraceEvent } from '@mmlab/protocol';
import { OpIds, Tracer } from '@mmlab/runtime';
import { Device, type DeviceCallbackCtx, DeviceHost } from './device';
import type { SubscriberStore } from './subscriber';

/** A device that zaps at once; `held` lets a test hold its range start open. */
class TestDevice extends Device {
  starts = 0;
  held?: Promise<void>;
  readonly invalidateRangeStart = async (
    req: ReqParsed<'mnInvalidateRangeStart'>,
    { op }: DeviceCallbackCtx,
  ) => {
    this.starts++;
    await this.held;
    this.cache.zap(req.pid, req.start, req.end, op);
  };
  readonly invalidateRangeEnd = async () => {};
  readonly invalidatePage = async (req: ReqParsed<'mnInvalidatePage'>, { op }: DeviceCallbackCtx) =>
    void this.cache.zap(req.pid, req.addr, req.addr + 4096, op);
  readonly release = async (req: ReqParsed<'mnRelease'>, { op }: DeviceCallbackCtx) =>
    void this.cache.zap(req.pid, 0, 2 ** 47, op);
}

/** The device on stand-ins for Redis and for mm's gup (pure: no NATS, no Redis). */
function setup(opts: { fenced?: boolean; gup?: () => Promise<void> } = {}) {
  const tracer = new Tracer(null, 'dev', 'gpu0');
  const events: TraceEvent[] = [];
  tracer.tap((e) => events.push(e));
  const store: SubscriberStore = {
    frameAccess: async (_pfn, _rw, value) =>
      opts.fenced ? 'FENCED' : { gen: 3, state: 'used', value: value ?? 7 },
    ptlHeldBy: async () => null,
    subscriberAlive: async () => {},
    livenessDrop: async () => {},
    unfence: async () => {},
    isFenced: async () => opts.fenced ?? false,
  };
  const calls: string[] = [];
  const rpc = {
    call: async (name: string, req: { addr?: number; write?: boolean }) => {
      calls.push(name);
      if (name !== 'gup') return {};
      await opts.gup?.();
      return { pages: [{ addr: req.addr, pfn: 12, gen: 3, writable: req.write ?? false }] };
    },
  };
  const device = new TestDevice();
  const host = new DeviceHost(
    {
      name: 'gpu0',
      store,
      tracer,
      ids: new OpIds('gpu0'),
      leaseMs: 1000,
      seed: 1,
      log: console,
      rpc: rpc as never,
      faultTimeoutMs: 2000,
    },
    device,
  );
  return { host, device, events, calls };
}

const A = 0x10000000;
const range = (inv: string) => ({
  pid: 1,
  inv,
  owner: 'mm-0/x',
  start: A,
  end: A + 4096,
  event: 'unmap' as const,
});

describe('DeviceHost (the Device SDK)', () => {
  it('attach registers the callbacks the device implements; a miss faults in and is traced', async () => {
    const { host, events, calls } = setup();
    expect(await host.attach(1)).toEqual({ attached: true });
    expect(await host.attach(1)).toEqual({ attached: false });
    expect(calls).toEqual(['notifierRegister']);
    const r = await host.access({ pid: 1, addr: A, op: 'read' });
    expect(r).toMatchObject({ value: 7, pfn: 12, gen: 3, faults: 1, hit: false, stale: false });
    expect(await host.access({ pid: 1, addr: A, op: 'read' })).toMatchObject({ hit: true });
    expect(events.map((e) => e.kind)).toEqual(['smap.set', 'access', 'access']);
  });

  it('a fault racing an invalidation installs nothing in its range until the end (read_retry)', async () => {
    let release!: () => void;
    const gupHeld = new Promise<void>((r) => (release = r));
    const { host, events } = setup({ gup: () => gupHeld });
    await host.attach(1);
    const access = host.access({ pid: 1, addr: A, op: 'read' });
    await Promise.resolve();
    // the start arrives while gup is out: count 1
    const start = host.notifier.invalidateRangeStart(range('i1'));
    release();
    await start;
    await new Promise((r) => setTimeout(r, 20));
    expect(events.filter((e) => e.kind === 'smap.set')).toHaveLength(0); // waits for the end
    await host.notifier.invalidateRangeEnd(range('i1'));
    expect(await access).toMatchObject({ value: 7, faults: 1 });
    const set = events.findIndex((e) => e.kind === 'smap.set');
    const endRecv = events.findIndex(
      (e) => e.kind === 'mn.recv' && e.callback === 'invalidate_range_end',
    );
    expect(set).toBeGreaterThan(endRecv);
  });

  it('a resent start runs the device once and acks every copy', async () => {
    const { host, device } = setup();
    await host.attach(1);
    expect(await host.notifier.invalidateRangeStart(range('i2'))).toEqual({ inv: 'i2' });
    expect(await host.notifier.invalidateRangeStart(range('i2'))).toEqual({ inv: 'i2' });
    expect(device.starts).toBe(1);
  });

  it('the ack waits for the zap: an entry is cleared before the start is acked', async () => {
    const { host, device, events } = setup();
    await host.attach(1);
    await host.access({ pid: 1, addr: A, op: 'write', value: 5 });
    let open!: () => void;
    device.held = new Promise<void>((r) => (open = r));
    let acked = false;
    const start = host.notifier.invalidateRangeStart(range('i3')).then(() => (acked = true));
    await new Promise((r) => setTimeout(r, 10));
    expect(acked).toBe(false);
    open();
    await start;
    const kinds = events.map((e) => e.kind);
    expect(kinds.indexOf('smap.clear')).toBeLessThan(kinds.lastIndexOf('mn.done'));
  });

  it('bad input: not attached → EINVAL, a write without a value → EINVAL; nothing changed', async () => {
    const { host, events, calls } = setup();
    const e1 = await host.access({ pid: 9, addr: A, op: 'read' }).catch((x: unknown) => x);
    expect((e1 as MmlabError).code).toBe('EINVAL');
    await host.attach(1);
    const e2 = await host.access({ pid: 1, addr: A, op: 'write' }).catch((x: unknown) => x);
    expect((e2 as MmlabError).code).toBe('EINVAL');
    expect(events).toEqual([]);
    expect(calls).toEqual(['notifierRegister']);
    expect(await host.detach(9)).toEqual({ detached: false });
  });

  it('a fenced device: its access is refused (ENODEV, access.refused)', async () => {
    const { host, events } = setup({ fenced: true });
    await host.attach(1);
    const e = await host.access({ pid: 1, addr: A, op: 'read' }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(MmlabError);
    expect((e as MmlabError).code).toBe('ENODEV');
    expect(events.map((x) => x.kind)).toContain('access.refused');
  });
});
