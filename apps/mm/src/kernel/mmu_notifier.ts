/**
 * mm/mmu_notifier.c (v3.7: SRCU, callbacks may sleep; v3.6's change_pte fallback for legacy):
 * the subscriber registry and the dispatch of callbacks across the network.
 *
 * A callback is a NATS request to the subscriber's own subject; mm waits for every ack before
 * it goes on, however long that takes — which is only allowed because, since the 2012 patch,
 * no PT lock is held here (in patched mode). What mm holds meanwhile are sleepable leases
 * (mmap_sem), renewed while it waits.
 *
 * A slow subscriber is not a dead one. Each attempt of a callback has a deadline
 * (MMLAB_CALLBACK_TIMEOUT_MS); when it passes, mm looks at the subscriber's liveness lease —
 * kept by the subscriber on a path separate from its callbacks — and either sends the same
 * callback again (same inv: the subscriber acks a repeat without doing the work twice) or, if
 * the lease expired, unregisters the subscriber everywhere and fences it (its device accesses
 * are refused from then on) and goes on without it.
 *
 *   mm                                   subscriber (alive, slow)
 *   send start(inv 7), wait ≤ T
 *                                        working (device TLB flush takes 5 s)
 *   timeout; lease alive → resend inv 7
 *                                        inv 7 already in progress: wait for it
 *                                        done → ack inv 7 (to both requests)
 *   ack inv 7 → go on                    (the second ack lands on a closed inbox: dropped)
 *
 * An ack must echo the inv it answers; anything else is ignored (mn.ack_ignored) and the wait
 * goes on.
 *
 * Telemetry (when on): every range invalidation is its own trace, rooted at a
 * `mmu_notifier_invalidate_range` span from invalidate_range_start to the end of
 * invalidate_range_end and linked to the span of the operation that started it (the syscall,
 * the fault); the caller runs the body between start and end under it (withinRange), so its
 * PT-lock holds and TLB shootdowns land in the same trace. An invalidate_page is a trace of its
 * own too (`mmu_notifier_invalidate_page`). Each callback to each subscriber is a child span
 * (`invalidate_range_start hca0`), and its request carries that span's context, so the
 * subscriber's handler span is the callback span's child.
 */
import { Logger } from '@nestjs/common';
import {
  ATOMIC_CALLBACKS,
  MmlabError,
  type MnCallback,
  type MnEvent,
  PAGE_SIZE,
  type Req,
  type Res,
} from '@mmlab/protocol';
import {
  type Span,
  SpanKind,
  endSpan,
  inSpan,
  linkToActive,
  now,
  sleep,
  startSpan,
  withSpan,
} from '@mmlab/runtime';
import type { OpenInvalidation } from '@mmlab/model';
import { type MmContext, injected, ownerOf } from './context';
import { type HeldLock, mmapWriteLock, mmapWriteUnlock } from './locks';
import { flushTlbRange } from './tlbflush';
import type { Notify } from '@mmlab/protocol';

type CallbackRpc =
  | 'mnInvalidateRangeStart'
  | 'mnInvalidateRangeEnd'
  | 'mnInvalidatePage'
  | 'mnChangePte'
  | 'mnClearFlushYoung'
  | 'mnRelease';

const CALLBACK_OF: Record<CallbackRpc, MnCallback> = {
  mnInvalidateRangeStart: 'invalidate_range_start',
  mnInvalidateRangeEnd: 'invalidate_range_end',
  mnInvalidatePage: 'invalidate_page',
  mnChangePte: 'change_pte',
  mnClearFlushYoung: 'clear_flush_young',
  mnRelease: 'release',
};

/** An invalidate_range_start that was sent: its end goes to the same subscribers. */
export interface RangeInvalidation extends Omit<OpenInvalidation, 'owner' | 'state'> {
  /** the invalidation's root span, ended by invalidateRangeEnd (telemetry on) */
  readonly span?: Span;
}

const log = new Logger('mmu_notifier');

/** The subscribers of an mm with their mmu_notifier_ops (store.mnSubscriberOps). */
type Subscribers = ReadonlyMap<string, ReadonlySet<MnCallback>>;

/**
 * Models: mm_has_notifiers(), include/linux/mmu_notifier.h v3.7 — the inline check every
 * mmu_notifier_* wrapper makes first: with no subscriber on the mm, nothing is called at all.
 * Every entry point of this file makes it itself (invalidateRangeStart/End, invalidatePage,
 * mmuNotifierChangePte, mmuNotifierRelease), so an mm nobody subscribed to records, traces and
 * sends nothing.
 *
 * The kernel tests mm->mmu_notifier_mm, which stays allocated from the first
 * mmu_notifier_register() until mmdrop(): after the last unregister it walks an empty hlist.
 * The lab tests the registry as it is now ({p:<pid>}:mn): no callback either way, and no trace
 * of a walk over nobody.
 */
const hasNotifiers = (subs: Subscribers): boolean => subs.size > 0;

/** mm_has_notifiers() of pid, for a caller outside this file (each entry point checks it itself). */
export async function mmHasNotifiers(ctx: MmContext, pid: number): Promise<boolean> {
  return hasNotifiers(await ctx.store.mnSubscriberOps(pid));
}

/** The subscribers whose mmu_notifier_ops has callback (hlist walk: `if (mn->ops->x)`). */
const subscribersWith = (subs: Subscribers, callback: MnCallback): string[] =>
  [...subs].filter(([, ops]) => ops.has(callback)).map(([name]) => name);
const hex = (a: number): string => `0x${a.toString(16)}`;

/** Run the body of a range invalidation (between start and end) inside its trace (null: none). */
export function withinRange<T>(r: RangeInvalidation | null, fn: () => Promise<T>): Promise<T> {
  return withSpan(r?.span, fn);
}

let invCounter = 0;
/**
 * An inv names one invalidation in the whole run: op ids restart with a restarted replica, so
 * the incarnation's boot id is part of it (a dead mm-1's inv is never a new mm-1's).
 */
const newInv = (ctx: MmContext, op: string): string =>
  `${op}~${ctx.incarnation.slice(ctx.incarnation.lastIndexOf('.') + 1)}.${++invCounter}`;

/**
 * Models: mmu_notifier_register(), mm/mmu_notifier.c v3.7 — under mmap_sem for write, so no
 * range invalidation is in flight. ops is the subscriber's struct mmu_notifier_ops: the
 * callbacks it implements (a NULL op is never called).
 */
export async function mmuNotifierRegister(
  ctx: MmContext,
  pid: number,
  subscriber: string,
  ops: readonly MnCallback[],
): Promise<void> {
  const op = ctx.ids.next('mn_register');
  const sem = await mmapWriteLock(ctx, pid, op);
  try {
    if (await ctx.store.isFenced(subscriber))
      throw new MmlabError(
        'ENODEV',
        `${subscriber} is fenced: it must restart before it registers again`,
      );
    await ctx.store.mnRegister(pid, subscriber, ops);
    // exit_mmap takes no mmap_sem: an exit that began before our write would never send us
    // release. Whichever comes second sees the other (the exit reads the subscribers after it
    // marks the mm exiting):
    //   register                      exit
    //   mnRegister
    //                                 mmExitBegin; release → subscriber (registered: it gets it)
    //   ... or ...
    //                                 mmExitBegin; release (subscriber not there yet)
    //   mnRegister; state exiting → unregister, ESRCH
    if ((await ctx.store.mmState(pid)).state !== 'alive') {
      await ctx.store.mnUnregister(pid, subscriber);
      throw new MmlabError('ESRCH', `no process ${pid}`);
    }
    ctx.tracer.emit({ kind: 'mn.register', op, pid, subscriber });
  } finally {
    await mmapWriteUnlock(ctx, sem);
  }
}

/** mmu_notifier_unregister(): release first (the mm is live), then unhash. */
export async function mmuNotifierUnregister(
  ctx: MmContext,
  pid: number,
  subscriber: string,
): Promise<boolean> {
  const op = ctx.ids.next('mn_unregister');
  const subs = await ctx.store.mnSubscribers(pid);
  if (!subs.includes(subscriber)) return false;
  const inv = newInv(ctx, op);
  await callOne(ctx, op, pid, subscriber, 'mnRelease', { pid, inv, owner: ownerOf(ctx, op) });
  const removed = await ctx.store.mnUnregister(pid, subscriber);
  ctx.tracer.emit({ kind: 'mn.unregister', op, pid, subscriber, reason: 'unregister' });
  return removed;
}

/**
 * Models: mmu_notifier_invalidate_range_start(mm, mmun_start, mmun_end), include/linux/
 * mmu_notifier.h v3.7 — `if (mm_has_notifiers(mm)) __mmu_notifier_invalidate_range_start()`.
 *
 * On an mm with no subscriber it does nothing and returns null: no record, no trace, no span;
 * invalidateRangeEnd(null) does nothing either, so the end always matches the start even if a
 * subscriber registered in between. Registering takes mmap_sem for write
 * (mmu_notifier_register → mm_take_all_locks in v3.7), which every caller holds for read or
 * write across start..end, except the lease-free COW fault (do_wp_page), which re-checks the mm
 * seq that the register bumps:
 *
 *   do_wp_page (mm-0)                     mmu_notifier_register(hca0) (mm-1)
 *   range_start: no subscriber → null
 *                                         down_write(mmap_sem): seq++; hca0 in :mn; up_write
 *   wpCopyLock(seq): changed → RETRY      (nothing was sent to hca0, nothing to end)
 *   from the top: range_start → hca0
 *
 * The invalidation is recorded in Redis ({p:<pid>}:inv, owned by this incarnation) before
 * anything is traced or sent, so that if this process dies before its end, another replica
 * finishes it (orphan_ranges.ts) — else every subscriber would keep the range active forever:
 *
 *   mm-0 (this)                          hca0                       mm-1
 *   invOpen(inv 7, owner mm-0.a1)
 *   range_start(inv 7) ─────────────────► active [a, b); slow zap
 *   ✗ killed                                                         lease mm-0.a1 expired
 *                                                                    invClaim(7: mm-0.a1 → mm-1.c3)
 *                                        range_end(inv 7) ◄───────── mn.range_end (deadSender)
 *                                        not active; faults go on    invClose(7)
 *
 * Killed between invOpen and the trace of mn.range_start, the end comes with no start in the
 * trace (paired-range reports it; no subscriber was told anything): a window of one Redis reply.
 */
export async function invalidateRangeStart(
  ctx: MmContext,
  op: string,
  pid: number,
  start: number,
  end: number,
  event: MnEvent,
): Promise<RangeInvalidation | null> {
  const all = await ctx.store.mnSubscriberOps(pid);
  if (!hasNotifiers(all)) return null;
  // Past a clean shutdown's drain, NATS is going: the start could be recorded and sent but
  // its trace lost (an end with no start). Refuse it before anything is recorded or sent.
  if (ctx.closing)
    throw new MmlabError('EAGAIN', `${ctx.instance} is shutting down: no new invalidation`);
  const subscribers = subscribersWith(all, 'invalidate_range_start');
  const inv = newInv(ctx, op);
  // Store.invOpen indexes pid for this incarnation first, once ({mm}:invpids: the reaper reads
  // the index, orphan_ranges.ts). ESTALE: this incarnation was found dead and fenced off pid.
  await ctx.store
    .invOpen({ pid, inv, op, start, end, event, subscribers, owner: ctx.incarnation })
    .catch((e: unknown) => {
      if (e instanceof MmlabError && e.code === 'ESTALE') ctx.onFenced?.();
      throw e;
    });
  ctx.openRanges.add(inv);
  ctx.tracer.emit({ kind: 'mn.range_start', op, pid, start, end, event, inv });
  // One trace per invalidation: a new root, linked to the op's own span.
  const span = startSpan('mmu_notifier_invalidate_range', () => ({
    root: true,
    links: linkToActive(),
    attributes: {
      'mmlab.op': op,
      'mmlab.pid': pid,
      'mmlab.inv': inv,
      'mmlab.start': hex(start),
      'mmlab.end': hex(end),
      'mmlab.mn.event': event,
      'mmlab.mn.subscribers': [...subscribers],
      'mmlab.instance': ctx.instance,
    },
  }));
  try {
    await withSpan(span, () =>
      dispatch(ctx, op, pid, subscribers, 'mnInvalidateRangeStart', {
        pid,
        inv,
        owner: ownerOf(ctx, op),
        start,
        end,
        event,
      }),
    );
  } catch (e) {
    // The caller gets no RangeInvalidation, so no end: the record stays until this
    // incarnation is gone, and then another replica sends the end (orphan_ranges.ts).
    ctx.openRanges.delete(inv);
    endSpan(span, e);
    throw e;
  }
  return { pid, inv, op, start, end, event, subscribers, span };
}

/**
 * mmu_notifier_invalidate_range_end(mm, mmun_start, mmun_end): the caller passes the values it
 * gave to start (the mmun_start/mmun_end convention), on every exit path. r is what start
 * returned: null when the mm had no notifiers then (mm_has_notifiers), and then nothing is done.
 *
 * Inject `range-end-mismatch` reproduces the bug Andrew Morton found reviewing the patch: in
 * do_huge_pmd_wp_page_fallback the copy loop advanced haddr before it was passed to
 * range_end, so end covered [start + len, end + len) instead of [start, end).
 */
export async function invalidateRangeEnd(
  ctx: MmContext,
  r: RangeInvalidation | null,
  mmunStart: number,
  mmunEnd: number,
): Promise<void> {
  if (!r) return;
  try {
    await sendRangeEnd(ctx, r, mmunStart, mmunEnd);
  } finally {
    ctx.openRanges.delete(r.inv);
  }
}

async function sendRangeEnd(
  ctx: MmContext,
  r: RangeInvalidation,
  mmunStart: number,
  mmunEnd: number,
): Promise<void> {
  const len = mmunEnd - mmunStart;
  const [start, end] = injected(ctx, 'range-end-mismatch')
    ? [mmunStart + len, mmunEnd + len]
    : [mmunStart, mmunEnd];
  // The end is ours to send unless another replica took it, having found our liveness lease
  // expired (this process was stopped longer than the TTL): then it has sent it, and a second
  // one would end the subscriber's range twice.
  //
  //   mm-0 (stopped past its lease)        mm-1
  //                                        invClaim(7: mm-0.a1 → mm-1.c3) → OK; range_end(7)
  //   SIGCONT; invClaim(7: mm-0.a1) → LOST
  //   no second end
  const claim = await ctx.store.invClaim(r.pid, r.inv, ctx.incarnation, ctx.incarnation);
  if (claim.r !== 'OK') {
    log.warn(
      `${r.op}: invalidate_range_end of inv ${r.inv} was sent for us (${claim.r}): we were taken for dead`,
    );
    endSpan(r.span);
    return;
  }
  ctx.tracer.emit({
    kind: 'mn.range_end',
    op: r.op,
    pid: r.pid,
    start,
    end,
    event: r.event,
    inv: r.inv,
  });
  try {
    await withinRange(r, async () => {
      // A subscriber fenced since the start gets no end: it is gone.
      const live = (await ctx.store.mnSubscribers(r.pid)).filter((s) => r.subscribers.includes(s));
      await dispatch(ctx, r.op, r.pid, live, 'mnInvalidateRangeEnd', {
        pid: r.pid,
        inv: r.inv,
        owner: ownerOf(ctx, r.op),
        start,
        end,
        event: r.event,
      });
    });
  } catch (e) {
    endSpan(r.span, e);
    throw e;
  }
  await ctx.store.invClose(r.pid, r.inv, ctx.incarnation);
  endSpan(r.span);
}

/**
 * The invalidate_range_end a dead mm incarnation owed for o: taken over atomically (one
 * replica wins), traced as mn.range_end with deadSender unless the dead one traced it already
 * (state ending: it died while sending it), sent with the same inv and the start's range to
 * the recorded subscribers still registered (callUntilAcked: resent while they live, fenced if
 * they die), then forgotten. Models nothing in the kernel: see orphan_ranges.ts.
 * → false when another replica took it first (or it was finished meanwhile).
 */
export async function invalidateRangeEndForDead(
  ctx: MmContext,
  o: OpenInvalidation,
): Promise<boolean> {
  const claim = await ctx.store.invClaim(o.pid, o.inv, o.owner, ctx.incarnation);
  if (claim.r !== 'OK') return false;
  if (claim.prev === 'open')
    ctx.tracer.emit({
      kind: 'mn.range_end',
      op: o.op,
      pid: o.pid,
      start: o.start,
      end: o.end,
      event: o.event,
      inv: o.inv,
      deadSender: o.owner,
    });
  await inSpan(
    'mmu_notifier_invalidate_range_end',
    () => ({
      root: true,
      attributes: {
        'mmlab.op': o.op,
        'mmlab.pid': o.pid,
        'mmlab.inv': o.inv,
        'mmlab.start': hex(o.start),
        'mmlab.end': hex(o.end),
        'mmlab.mn.dead_sender': o.owner,
        'mmlab.instance': ctx.instance,
      },
    }),
    async () => {
      const live = (await ctx.store.mnSubscribers(o.pid)).filter((s) => o.subscribers.includes(s));
      await dispatch(ctx, o.op, o.pid, live, 'mnInvalidateRangeEnd', {
        pid: o.pid,
        inv: o.inv,
        owner: ownerOf(ctx, o.op),
        start: o.start,
        end: o.end,
        event: o.event,
      });
    },
  );
  return ctx.store.invClose(o.pid, o.inv, ctx.incarnation);
}

/**
 * Models: ptep_clear_flush() (v3.7) and ptep_clear_flush_notify() (v3.6,
 * include/linux/mmu_notifier.h) for a PTE a script just cleared under the held PT lock, where it
 * mapped page: traced, and shot down from the CPU TLBs; in v3.6 (legacy) the secondary MMUs get
 * invalidate_page there too, still under the lock. A v3.7 caller sends it after the unlock.
 */
export async function ptepClearFlushNotify(
  ctx: MmContext,
  held: HeldLock,
  addr: number,
  page: { pfn: number; gen: number },
  cpumask: string[],
  /** the caller's ordering in this era (eras/): page-under-ptl sends invalidate_page here */
  notify: Notify,
): Promise<void> {
  const { op, pid, lock } = held;
  const token = held.lease.token;
  ctx.tracer.emit({ kind: 'pte.clear', op, pid, addr, pfn: page.pfn, gen: page.gen, lock, token });
  await flushTlbRange(ctx, op, pid, addr, addr + PAGE_SIZE, cpumask);
  if (notify === 'page-under-ptl') await invalidatePage(ctx, op, pid, addr);
}

/**
 * Models: mmu_notifier_invalidate_page(mm, address), mm/mmu_notifier.c v3.7 (2012). With no
 * subscriber that has invalidate_page (none at all: mm_has_notifiers) nothing is traced or sent.
 */
export async function invalidatePage(
  ctx: MmContext,
  op: string,
  pid: number,
  addr: number,
): Promise<void> {
  const all = await ctx.store.mnSubscriberOps(pid);
  if (!hasNotifiers(all)) return;
  const subscribers = subscribersWith(all, 'invalidate_page');
  if (subscribers.length === 0) return;
  const inv = newInv(ctx, op);
  ctx.tracer.emit({ kind: 'mn.page', op, pid, addr, inv });
  await inSpan(
    'mmu_notifier_invalidate_page',
    () => ({
      root: true,
      links: linkToActive(),
      attributes: {
        'mmlab.op': op,
        'mmlab.pid': pid,
        'mmlab.inv': inv,
        'mmlab.addr': hex(addr),
        'mmlab.mn.subscribers': [...subscribers],
        'mmlab.instance': ctx.instance,
      },
    }),
    () =>
      dispatch(ctx, op, pid, subscribers, 'mnInvalidatePage', {
        pid,
        inv,
        owner: ownerOf(ctx, op),
        addr,
      }),
  );
}

/**
 * Models: __mmu_notifier_change_pte(), mm/mmu_notifier.c — v3.7, or v3.6 with `v36`. Sent by
 * set_pte_at_notify() under the PT lock, so each subscriber must answer without sleeping:
 *   v3.7: change_pte to every subscriber that has it; the others get nothing (do_wp_page and
 *         KSM wrap it in invalidate_range_start/end since 6bdb913f);
 *   v3.6: change_pte to those that have it, invalidate_page to those that have only that
 *         ("Some drivers don't have change_pte, so we must call invalidate_page in that case").
 * One inv for the whole walk, traced as mn.page (the single-page notification). Nothing is
 * traced or sent when no subscriber gets a call (none at all: mm_has_notifiers).
 */
export async function mmuNotifierChangePte(
  ctx: MmContext,
  op: string,
  pid: number,
  addr: number,
  pte: { pfn: number; gen: number; writable: boolean },
  v36 = false,
): Promise<void> {
  const all = await ctx.store.mnSubscriberOps(pid);
  if (!hasNotifiers(all)) return;
  const calls: Array<[string, 'mnChangePte' | 'mnInvalidatePage']> = [];
  for (const [name, ops] of all) {
    if (ops.has('change_pte')) calls.push([name, 'mnChangePte']);
    else if (v36 && ops.has('invalidate_page')) calls.push([name, 'mnInvalidatePage']);
  }
  if (calls.length === 0) return;
  const inv = newInv(ctx, op);
  const owner = ownerOf(ctx, op);
  ctx.tracer.emit({ kind: 'mn.page', op, pid, addr, inv });
  const one = ([s, name]: [string, 'mnChangePte' | 'mnInvalidatePage']) =>
    name === 'mnChangePte'
      ? callOne(ctx, op, pid, s, name, {
          pid,
          inv,
          owner,
          addr,
          pfn: pte.pfn,
          gen: pte.gen,
          writable: pte.writable,
        })
      : callOne(ctx, op, pid, s, name, { pid, inv, owner, addr });
  if (ctx.env.MMLAB_DISPATCH === 'serial') for (const c of calls) await one(c);
  else await Promise.all(calls.map(one));
}

/**
 * Models: __mmu_notifier_clear_flush_young(), mm/mmu_notifier.c v3.7 (v3.6 alike): ask every
 * subscriber that has clear_flush_young whether it accessed [start, end) since the last time,
 * clearing its accessed bits. Sent by ptep_clear_flush_young_notify() under the PT lock: the
 * subscriber answers without sleeping (ATOMIC_CALLBACKS). KVM answers from its sPTEs' accessed
 * bits; ib_umem_odp has no young callbacks, so an ODP device's use of a page counts for
 * nothing here. → whether any said young.
 */
export async function mmuNotifierClearFlushYoung(
  ctx: MmContext,
  op: string,
  pid: number,
  start: number,
  end: number,
): Promise<boolean> {
  const all = await ctx.store.mnSubscriberOps(pid);
  if (!hasNotifiers(all)) return false;
  const subscribers = subscribersWith(all, 'clear_flush_young');
  if (subscribers.length === 0) return false;
  const inv = newInv(ctx, op);
  const owner = ownerOf(ctx, op);
  const ask = (s: string) =>
    callOne(ctx, op, pid, s, 'mnClearFlushYoung', { pid, inv, owner, start, end });
  const replies: Array<{ young: boolean } | null> = [];
  if (ctx.env.MMLAB_DISPATCH === 'serial') for (const s of subscribers) replies.push(await ask(s));
  else replies.push(...(await Promise.all(subscribers.map(ask))));
  return replies.some((r) => r?.young === true);
}

/**
 * mmu_notifier_release(mm): every subscriber drops everything of pid; then they are unhashed.
 * Nothing at all (no trace) on an mm with no subscriber (mm_has_notifiers).
 */
export async function mmuNotifierRelease(ctx: MmContext, op: string, pid: number): Promise<void> {
  const all = await ctx.store.mnSubscriberOps(pid);
  if (!hasNotifiers(all)) return;
  const subscribers = [...all.keys()];
  const inv = newInv(ctx, op);
  ctx.tracer.emit({ kind: 'mn.release', op, pid, inv });
  const withRelease = subscribersWith(all, 'release');
  await dispatch(ctx, op, pid, withRelease, 'mnRelease', { pid, inv, owner: ownerOf(ctx, op) });
  for (const s of subscribers) {
    await ctx.store.mnUnregister(pid, s);
    ctx.tracer.emit({ kind: 'mn.unregister', op, pid, subscriber: s, reason: 'exit' });
  }
}

/** Call every subscriber: concurrently (default), or one after another as the kernel's hlist walk does. */
async function dispatch<N extends CallbackRpc>(
  ctx: MmContext,
  op: string,
  pid: number,
  subscribers: readonly string[],
  name: N,
  req: Req<N>,
): Promise<void> {
  if (ctx.env.MMLAB_DISPATCH === 'serial') {
    for (const s of subscribers) await callOne(ctx, op, pid, s, name, req);
  } else {
    await Promise.all(subscribers.map((s) => callOne(ctx, op, pid, s, name, req)));
  }
}

/** One callback to one subscriber, until it acks or is found dead: one span (`<callback> <subscriber>`). */
function callOne<N extends CallbackRpc>(
  ctx: MmContext,
  op: string,
  pid: number,
  subscriber: string,
  name: N,
  req: Req<N>,
): Promise<Res<N> | null> {
  const callback = CALLBACK_OF[name];
  return inSpan(
    `${callback} ${subscriber}`,
    () => ({
      kind: SpanKind.CLIENT,
      attributes: {
        'mmlab.op': op,
        'mmlab.pid': pid,
        'mmlab.inv': (req as { inv: string }).inv,
        'mmlab.mn.subscriber': subscriber,
        'mmlab.mn.callback': callback,
      },
    }),
    (span) => callUntilAcked(ctx, op, pid, subscriber, name, req, span),
  );
}

async function callUntilAcked<N extends CallbackRpc>(
  ctx: MmContext,
  op: string,
  pid: number,
  subscriber: string,
  name: N,
  req: Req<N>,
  span: Span | undefined,
): Promise<Res<N> | null> {
  const callback = CALLBACK_OF[name];
  const inv = (req as { inv: string }).inv;
  const t0 = now();
  const outcome = (o: 'ack' | 'error' | 'fenced', attempts: number): void => {
    span?.setAttributes({ 'mmlab.mn.outcome': o, 'mmlab.mn.attempts': attempts });
  };
  for (let attempt = 1; ; attempt++) {
    // The atomic-context guard: sending a callback (which may sleep) while this op holds a
    // PT lock is a might_sleep() splat. Patched code never gets here with a lock held, except
    // for the callbacks v3.7 itself sends under it, which must not sleep (ATOMIC_CALLBACKS).
    const held = ctx.atomic.get(op) ?? null;
    if (held && !ATOMIC_CALLBACKS.has(callback))
      ctx.tracer.emit({ kind: 'might_sleep', op, pid, callback, inv, lock: held });
    ctx.tracer.emit({ kind: 'mn.send', op, pid, subscriber, callback, inv, attempt, ptl: held });
    try {
      const reply = await ctx.rpc.call(name, req, {
        id: subscriber,
        timeoutMs: ctx.env.MMLAB_CALLBACK_TIMEOUT_MS,
      });
      const got = reply.inv;
      if (got === inv) {
        ctx.tracer.emit({
          kind: 'mn.ack',
          op,
          pid,
          subscriber,
          callback,
          inv,
          waitedMs: now() - t0,
        });
        outcome('ack', attempt);
        return reply;
      }
      ctx.tracer.emit({ kind: 'mn.ack_ignored', op, pid, subscriber, callback, inv, got });
    } catch (e) {
      const err = MmlabError.wrap(e);
      // ESHUTDOWN: the subscriber stopped before it finished this callback (its clean stop
      // gave up): no ack, as a timeout is none — its lease says whether to resend or fence.
      if (err.code !== 'ETIMEDOUT' && err.code !== 'ENOHANDLER' && err.code !== 'ESHUTDOWN') {
        // A subscriber that answers with an error has still answered: a blockable
        // invalidate_range_start cannot fail in the kernel either. Record it and go on.
        ctx.tracer.emit({
          kind: 'mn.ack_ignored',
          op,
          pid,
          subscriber,
          callback,
          inv,
          got: err.code,
        });
        outcome('error', attempt);
        return null;
      }
      if (!(await ctx.store.subscriberIsAlive(subscriber))) {
        await fenceSubscriber(ctx, op, subscriber, `liveness lease expired during ${callback}`);
        outcome('fenced', attempt);
        return null;
      }
      // Alive but slow (or restarting): wait for it, as long as it takes.
      if (err.code !== 'ETIMEDOUT') await sleep(50);
    }
  }
}

/**
 * A subscriber whose liveness lease expired: unregister it from every mm and fence it, so that
 * whatever its device still does to memory is refused and reported.
 */
export async function fenceSubscriber(
  ctx: MmContext,
  op: string,
  subscriber: string,
  reason: string,
): Promise<void> {
  await ctx.store.fence(subscriber);
  ctx.tracer.emit({ kind: 'mn.fenced', op, subscriber, reason });
  for (const pid of await ctx.store.mnRegistrations(subscriber)) {
    if (await ctx.store.mnUnregister(pid, subscriber))
      ctx.tracer.emit({ kind: 'mn.unregister', op, pid, subscriber, reason: 'dead' });
  }
}
