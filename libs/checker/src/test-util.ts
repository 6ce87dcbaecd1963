/**
 * Event builders for the checker's specs: every field a rule does not look at gets a default,
 * so a spec states only what matters (`write(0x10000000, 5, 1, 2)`). Not exported by index.ts.
 */
import type { EventOf, TraceEvent, TraceKind } from '@mmlab/protocol';
import { MMAP_BASE } from '@mmlab/protocol';
import { checkInvariants } from './check';
import type { InvariantName, InvariantVerdict } from './types';

let seq = 0;
type Fields<K extends TraceKind> = Omit<EventOf<K>, 'id' | 'ts' | 'service' | 'instance' | 'kind'>;

/** Any event, with id/service/instance filled in. */
export function mk<K extends TraceKind>(kind: K, ts: number, fields: Fields<K>): EventOf<K> {
  return { id: `t:${++seq}`, ts, service: 'mm', instance: 'mm-0', kind, ...fields } as EventOf<K>;
}

export const PID = 1;
export const A = MMAP_BASE; // a page
export const B = MMAP_BASE + 4096; // the next page

type AccessOpts = Partial<Fields<'access'>> & { ts?: number };
const access = (
  rw: 'read' | 'write',
  addr: number,
  value: number,
  tStart: number,
  tEnd: number,
  o: AccessOpts = {},
): EventOf<'access'> =>
  mk('access', o.ts ?? tEnd, {
    agent: 'cpu0',
    pid: PID,
    addr,
    rw,
    value,
    pfn: 7,
    gen: 1,
    frameGen: 1,
    frameFree: false,
    tStart,
    tEnd,
    ...o,
  });

/** A store of value to addr over [tStart, tEnd] (emitted at tEnd unless o.ts). */
export const write = (addr: number, value: number, tStart: number, tEnd: number, o?: AccessOpts) =>
  access('write', addr, value, tStart, tEnd, o);
/** A load that returned value. */
export const read = (addr: number, value: number, tStart: number, tEnd: number, o?: AccessOpts) =>
  access('read', addr, value, tStart, tEnd, o);

export const vmaMap = (start: number, end: number, ts: number, pid = PID) =>
  mk('vma.map', ts, { pid, start, end, prot: 'rw', flags: [] });
export const vmaUnmap = (start: number, end: number, ts: number, pid = PID) =>
  mk('vma.unmap', ts, { pid, start, end });

export const acquire = (lock: string, token: number, ts: number, owner = 'mm-0', pid = PID) =>
  mk('ptl.acquire', ts, { pid, lock, owner, token, waitMs: 0 });
export const release = (
  lock: string,
  token: number,
  ts: number,
  heldMs: number,
  owner = 'mm-0',
  pid = PID,
) => mk('ptl.release', ts, { pid, lock, owner, token, heldMs, released: true });
export const pteSet = (lock: string, token: number | null, ts: number, pid = PID) =>
  mk('pte.set', ts, { pid, addr: A, pfn: 7, gen: 1, writable: true, lock, token });
export const pteClear = (lock: string, token: number | null, ts: number, pid = PID) =>
  mk('pte.clear', ts, { pid, addr: A, pfn: 7, gen: 1, lock, token });
export const pteReject = (lock: string, token: number, ts: number, pid = PID) =>
  mk('pte.reject', ts, { pid, lock, token, reason: 'stale token' });

/** The verdict of one invariant over events (through checkInvariants, so sorting is included). */
export function verdictOf(
  name: InvariantName,
  events: TraceEvent[],
  softlockupMs = 1000,
): InvariantVerdict {
  const v = checkInvariants(events, { softlockupMs }).find((x) => x.name === name);
  if (!v) throw new Error(`${name} is not implemented`);
  return v;
}

/** The offending events of each violation, for exact assertions. */
export const violating = (v: InvariantVerdict): TraceEvent[][] => v.violations.map((x) => x.events);

// ---- notifier and secondary-MMU events ---------------------------------------------------

/** One mn.send: callback sent by op to subscriber, with the PT lock the op claimed to hold. */
export const mnSend = (
  ts: number,
  o: { op?: string; inv?: string; subscriber?: string; ptl?: string | null } & Partial<
    Fields<'mn.send'>
  > = {},
) =>
  mk('mn.send', ts, {
    pid: PID,
    subscriber: 'hca0',
    callback: 'invalidate_range_start',
    inv: 'inv1',
    attempt: 1,
    ptl: null,
    ...o,
  });
export const mightSleep = (ts: number, o: Partial<Fields<'might_sleep'>> = {}) =>
  mk('might_sleep', ts, {
    pid: PID,
    callback: 'invalidate_page',
    inv: 'inv1',
    lock: 'ptl:0',
    ...o,
  });
export const ptlHeld = (ts: number, o: Partial<Fields<'mn.ptl_held'>> = {}) =>
  mk('mn.ptl_held', ts, {
    agent: 'hca0',
    pid: PID,
    callback: 'invalidate_page',
    inv: 'inv1',
    lock: 'ptl:0',
    owner: 'mm-0/op1',
    ...o,
  });
/** A PT-lock acquire/release made by op (the op field the notifier rules match on). */
export const opAcquire = (op: string, lock: string, token: number, ts: number, pid = PID) => ({
  ...acquire(lock, token, ts, `mm-0/${op}`, pid),
  op,
});
export const opRelease = (op: string, lock: string, token: number, ts: number, pid = PID) => ({
  ...release(lock, token, ts, 0, `mm-0/${op}`, pid),
  op,
});

export const rangeStart = (inv: string, start: number, end: number, ts: number, pid = PID) =>
  mk('mn.range_start', ts, { pid, start, end, event: 'unmap', inv });
export const rangeEnd = (inv: string, start: number, end: number, ts: number, pid = PID) =>
  mk('mn.range_end', ts, { pid, start, end, event: 'unmap', inv });

export const tlbFill = (agent: string, addr: number, pfn: number, gen: number, ts: number) =>
  mk('tlb.fill', ts, { agent, pid: PID, addr, pfn, gen, writable: true });
export const tlbFlush = (agent: string, start: number, end: number, ts: number, pid = PID) =>
  mk('tlb.flush', ts, { agent, pid, start, end, entries: 1 });
export const smapSet = (agent: string, addr: number, pfn: number, gen: number, ts: number) =>
  mk('smap.set', ts, { agent, pid: PID, addr, pfn, gen, writable: true });
export const smapClear = (agent: string, addr: number, pfn: number, gen: number, ts: number) =>
  mk('smap.clear', ts, { agent, pid: PID, addr, pfn, gen });
export const frameFree = (pfn: number, gen: number, ts: number) =>
  mk('frame.free', ts, { pfn, gen });
export const frameAlloc = (pfn: number, gen: number, ts: number) =>
  mk('frame.alloc', ts, { pfn, gen });

/** A subscriber receiving a callback (start/end: the range, or the page for invalidate_page). */
export const recv = (
  agent: string,
  callback: Fields<'mn.recv'>['callback'],
  inv: string,
  ts: number,
  range: { start?: number; end?: number } = {},
) => mk('mn.recv', ts, { agent, pid: PID, callback, inv, ...range });
export const done = (
  agent: string,
  callback: Fields<'mn.done'>['callback'],
  inv: string,
  ts: number,
) => mk('mn.done', ts, { agent, pid: PID, callback, inv });
