/**
 * The locks of the mm (v3.7), as Redis leases (libs/model/lease.ts):
 *   pte_offset_map_lock() / spin_lock(ptl)   → ptlLock: spins (yield, then short sleeps)
 *   down_write(&mm->mmap_sem)                → mmapWriteLock: sleeps
 *   down_read(&mm->mmap_sem)                 → mmapReadLock: sleeps while a writer holds it
 * Each acquire and release is traced; a release that finds the lease gone says so. With
 * telemetry on, each PT-lock hold is also a span (`ptl ptl:<n>`, from the grant to the release),
 * child of the span of the operation that took it, whose attributes are the ptl.acquire and
 * ptl.release events' fields (one emission: Tracer.open).
 */
import { MmlabError } from '@mmlab/protocol';
import { Lease, procKeys } from '@mmlab/model';
import { type OpenStep, now, sleep, withSpan } from '@mmlab/runtime';
import { type MmContext, backoff, ownerOf } from './context';

export interface HeldLock {
  readonly lease: Lease;
  readonly pid: number;
  readonly lock: string;
  readonly op: string;
  /** the hold as a traced step: ptl.acquire now, ptl.release at its end (and its span) */
  readonly step: OpenStep;
}

/** spin_lock(pte_lockptr(mm, pmd)) — or &mm->page_table_lock for lock 'ptl:mm'. */
export async function ptlLock(
  ctx: MmContext,
  pid: number,
  lock: string,
  op: string,
): Promise<HeldLock> {
  const t0 = now();
  const deadline = Date.now() + ctx.env.MMLAB_FAULT_DEADLINE_MS;
  const owner = ownerOf(ctx, op);
  const intent = ctx.intents.get(op);
  for (let attempt = 0; ; attempt++) {
    const r = await ctx.store.ptlLock(pid, lock, owner, ctx.env.MMLAB_LEASE_TTL_MS, intent);
    if (r.ok) return heldPtl(ctx, pid, lock, op, r.token, t0);
    if ('fenced' in r) {
      // This incarnation was taken for dead (stopped past its liveness lease) and another
      // replica took the operation over (intent.ts): it may not write a page table for it.
      const by = r.fenced ? `by ${r.fenced}` : 'and finished by another replica';
      ctx.tracer.emit({
        kind: 'pte.reject',
        op,
        pid,
        lock,
        token: null,
        reason: `operation taken over ${by}: incarnation fenced`,
      });
      throw new MmlabError('ESTALE', `${op} was taken over ${by}`);
    }
    await backoff(attempt, deadline, `${lock} of pid ${pid}`);
  }
}

/**
 * A PT lock just granted (by ptlLock, or by a script that took it together with its first
 * page-table step): start renewing its lease and trace the acquire.
 */
export function heldPtl(
  ctx: MmContext,
  pid: number,
  lock: string,
  op: string,
  token: number,
  since: number,
): HeldLock {
  const at = now();
  const owner = ownerOf(ctx, op);
  const step = ctx.tracer.open(`ptl ${lock}`, {
    kind: 'ptl.acquire',
    op,
    pid,
    lock,
    owner,
    token,
    waitMs: at - since,
    ts: at,
  });
  const lease = new Lease(
    ctx.store,
    procKeys(pid).ptl(lock),
    owner,
    token,
    ctx.env.MMLAB_LEASE_TTL_MS,
    at,
  );
  ctx.atomic.set(op, lock);
  return { lease, pid, lock, op, step };
}

/** Run fn as the critical section of h: what it sends (a TLB shootdown) is a child of the hold's span. */
export function underPtl<T>(h: HeldLock, fn: () => Promise<T>): Promise<T> {
  return withSpan(h.step.span, fn);
}

/** Trace the release of a PT lock whose Redis key a script already deleted or must delete. */
export function traceUnlock(ctx: MmContext, h: HeldLock, released: boolean): void {
  const at = now();
  ctx.atomic.delete(h.op);
  h.step.end(
    {
      kind: 'ptl.release',
      op: h.op,
      pid: h.pid,
      lock: h.lock,
      owner: h.lease.owner,
      token: h.lease.token,
      heldMs: at - h.lease.acquiredAt,
      released,
      ts: at,
    },
    released ? undefined : new MmlabError('ESTALE', `${h.lock} lost before release`),
  );
}

/** spin_unlock(ptl). */
export async function ptlUnlock(ctx: MmContext, h: HeldLock): Promise<boolean> {
  const ok = await h.lease.release(() => ctx.store.leaseRelease(h.lease.key, h.lease.value));
  traceUnlock(ctx, h, ok);
  return ok;
}

/**
 * A debugger breakpoint inside the critical section: armed over mmlab.mm.<id>.debug, it makes
 * the next PT-lock holder of this replica sleep, so a test can kill or SIGSTOP it right there.
 */
export async function debugStallUnderPtl(ctx: MmContext, h: HeldLock): Promise<void> {
  const ms = ctx.stallUnderPtlMs;
  if (!ms) return;
  ctx.stallUnderPtlMs = 0;
  ctx.tracer.emit({ kind: 'debug.stall', op: h.op, pid: h.pid, lock: h.lock, ms });
  await ctx.tracer.flush();
  await sleep(ms);
}

export interface HeldSem {
  readonly lease: Lease;
  readonly pid: number;
  readonly op: string;
  readonly mode: 'read' | 'write';
}

/**
 * down_write / down_read(&mm->mmap_sem), v3.7: a writer sleeps until the writer and every
 * reader are gone; a reader only until no writer holds it (readers share it, and the lease-free
 * fault path, a reader too, never waits for one). Past the fault deadline: EAGAIN.
 */
async function mmapLock(
  ctx: MmContext,
  pid: number,
  op: string,
  mode: 'read' | 'write',
): Promise<HeldSem> {
  const deadline = Date.now() + ctx.env.MMLAB_FAULT_DEADLINE_MS;
  const owner = ownerOf(ctx, op);
  const ttl = ctx.env.MMLAB_LEASE_TTL_MS;
  for (let attempt = 0; ; attempt++) {
    const r =
      mode === 'write'
        ? await ctx.store.semWriteLock(pid, owner, ttl)
        : await ctx.store.semReadLock(pid, owner, ttl);
    if (r === 'ESRCH') throw new MmlabError('ESRCH', `no process ${pid}`);
    if (r.ok) {
      const at = now();
      ctx.tracer.emit({ kind: 'mmap_sem.acquire', op, pid, mode, owner, token: r.token, ts: at });
      const k = procKeys(pid);
      const lease =
        mode === 'write'
          ? new Lease(ctx.store, k.semW, owner, r.token, ttl, at)
          : new Lease(ctx.store, k.semR, owner, r.token, ttl, at, (value, t) =>
              ctx.store.semReadRenew(pid, value, t),
            );
      return { lease, pid, op, mode };
    }
    if (Date.now() > deadline) throw new MmlabError('EAGAIN', `mmap_sem of pid ${pid} still held`);
    await sleep(Math.min(10, 1 + attempt));
  }
}

/** up_write / up_read(&mm->mmap_sem), as h was taken. */
async function mmapUnlock(ctx: MmContext, h: HeldSem): Promise<void> {
  const ok = await h.lease.release(() =>
    h.mode === 'write'
      ? ctx.store.semWriteUnlock(h.pid, h.lease.value)
      : ctx.store.semReadUnlock(h.pid, h.lease.value),
  );
  ctx.tracer.emit({
    kind: 'mmap_sem.release',
    op: h.op,
    pid: h.pid,
    mode: h.mode,
    owner: h.lease.owner,
    token: h.lease.token,
    released: ok,
  });
}

/** down_write(&mm->mmap_sem). */
export const mmapWriteLock = (ctx: MmContext, pid: number, op: string): Promise<HeldSem> =>
  mmapLock(ctx, pid, op, 'write');
/** up_write(&mm->mmap_sem). */
export const mmapWriteUnlock = mmapUnlock;
/** down_read(&mm->mmap_sem). */
export const mmapReadLock = (ctx: MmContext, pid: number, op: string): Promise<HeldSem> =>
  mmapLock(ctx, pid, op, 'read');
/** up_read(&mm->mmap_sem). */
export const mmapReadUnlock = mmapUnlock;
