/**
 * no-sleep-under-ptlock — no notifier callback is outstanding while the op that sent it holds
 * a PT lock (subscribers verify in Redis on receipt, too).
 *
 * Models: might_sleep() (v3.7) in mmu_notifier_invalidate_range_start() and the "BUG: sleeping
 * function called from invalid context" it prints: a PT lock is a spinlock, and a callback
 * may sleep (a device waits for its invalidation to complete). The 2012 patch moved the
 * invalidations out of the PT lock; legacy mode (v3.6's placement) keeps invalidate_page (and
 * the range callbacks of THP/hugetlb) under it.
 *
 * v3.7 itself still sends change_pte, clear_flush_young and test_young under the PT lock
 * (ATOMIC_CALLBACKS, libs/protocol): those are answered without sleeping, as CPUs answer a TLB
 * shootdown, so sending them under the lock is no violation here. A subscriber that sleeps in
 * one anyway keeps the lock held meanwhile: bounded-ptlock-hold reports that.
 *
 *   mm op X                                   subscriber hca0
 *   ptl.acquire ptl:0 (op X)
 *   mn.send invalidate_page (op X)   --->     mn.recv; Redis: X holds ptl:0 → mn.ptl_held
 *     ... X spins while hca0 sleeps ...
 *   ptl.release ptl:0
 *
 * Four kinds of evidence, each enough on its own:
 *   (a) an mn.send whose `ptl` is non-null (the sender says it held a PT lock);
 *   (b) an mn.send by op X at ts T while X holds a PT lock in the trace: a ptl.acquire by X
 *       with ts < T and no ptl.release of the same (pid, lock, token) with ts < T (whatever
 *       the sender claimed; op ids are unique across instances, so the op alone identifies X);
 *   (c) a might_sleep event (the mm's own guard fired);
 *   (d) an mn.ptl_held event (a subscriber found the sender holding a PT lock on receipt).
 * One violation per offending callback, i.e. per (pid, inv, subscriber): every piece of
 * evidence about it is listed, the offending events in ts order first, then the ptl.acquire
 * events that show the lock held. might_sleep names no subscriber: it is evidence for every
 * subscriber sent a callback of that (pid, inv), or a violation of its own when none was.
 * `checked` counts the callbacks examined: distinct (pid, inv, subscriber) of mn.send and
 * mn.ptl_held events, plus lone might_sleep groups (callbacks of ATOMIC_CALLBACKS excluded).
 */
import { ATOMIC_CALLBACKS, type EventOf, type TraceEvent } from '@mmlab/protocol';
import type { Rule, Violation } from './types';

type Acquire = EventOf<'ptl.acquire'>;

interface Callback {
  pid: number;
  inv: string;
  /** '' for a lone might_sleep (no subscriber named) */
  subscriber: string;
  offending: TraceEvent[];
  /** the ptl.acquire events of (b) */
  held: Acquire[];
  reasons: Set<string>;
  callbacks: Set<string>;
}

const holdKey = (e: { pid: number; lock: string; token: number }) =>
  `${e.pid}|${e.lock}|${e.token}`;

export const noSleepUnderPtlock: Rule<'no-sleep-under-ptlock'> = {
  name: 'no-sleep-under-ptlock',
  models: 'might_sleep() in atomic context: a notifier callback sent while holding a PT lock',
  check(events) {
    const acquiresByOp = new Map<string, Acquire[]>();
    const releaseTs = new Map<string, number[]>();
    for (const e of events) {
      if (e.kind === 'ptl.acquire' && e.op !== undefined) {
        const l = acquiresByOp.get(e.op);
        if (l) l.push(e);
        else acquiresByOp.set(e.op, [e]);
      } else if (e.kind === 'ptl.release') {
        const l = releaseTs.get(holdKey(e));
        if (l) l.push(e.ts);
        else releaseTs.set(holdKey(e), [e.ts]);
      }
    }
    /** (b): the PT locks op holds at ts (acquired strictly before, not released strictly before). */
    const heldAt = (op: string, ts: number): Acquire[] =>
      (acquiresByOp.get(op) ?? []).filter(
        (a) => a.ts < ts && !(releaseTs.get(holdKey(a)) ?? []).some((r) => r < ts),
      );

    const callbacks = new Map<string, Callback>();
    /** the callbacks with a subscriber, per (pid, inv): where a might_sleep belongs */
    const byInv = new Map<string, Callback[]>();
    const callbackOf = (pid: number, inv: string, subscriber: string): Callback => {
      const key = `${pid}|${inv}|${subscriber}`;
      let c = callbacks.get(key);
      if (!c) {
        callbacks.set(
          key,
          (c = {
            pid,
            inv,
            subscriber,
            offending: [],
            held: [],
            reasons: new Set(),
            callbacks: new Set(),
          }),
        );
        if (subscriber !== '') {
          const l = byInv.get(`${pid}|${inv}`);
          if (l) l.push(c);
          else byInv.set(`${pid}|${inv}`, [c]);
        }
      }
      return c;
    };
    const mightSleeps: EventOf<'might_sleep'>[] = [];
    for (const e of events) {
      if ('callback' in e && ATOMIC_CALLBACKS.has(e.callback)) continue;
      if (e.kind === 'mn.send') {
        const c = callbackOf(e.pid, e.inv, e.subscriber);
        const held = e.op !== undefined ? heldAt(e.op, e.ts) : [];
        if (e.ptl !== null || held.length > 0) {
          c.offending.push(e);
          c.callbacks.add(e.callback);
          if (e.ptl !== null) c.reasons.add(`sent with ${e.ptl} held (mn.send)`);
          for (const a of held) {
            if (!c.held.includes(a)) c.held.push(a);
            c.reasons.add(`op ${e.op} held ${a.lock} (token ${a.token}) when it sent`);
          }
        }
      } else if (e.kind === 'mn.ptl_held') {
        const c = callbackOf(e.pid, e.inv, e.agent);
        c.offending.push(e);
        c.callbacks.add(e.callback);
        c.reasons.add(`${e.agent} found ${e.owner} holding ${e.lock} on receipt`);
      } else if (e.kind === 'might_sleep') mightSleeps.push(e);
    }
    for (const m of mightSleeps) {
      const targets = byInv.get(`${m.pid}|${m.inv}`) ?? [];
      for (const c of targets.length > 0 ? targets : [callbackOf(m.pid, m.inv, '')]) {
        c.offending.push(m);
        c.callbacks.add(m.callback);
        c.reasons.add(`might_sleep fired with ${m.lock} held`);
      }
    }

    const violations: Violation[] = [];
    for (const c of callbacks.values()) {
      if (c.offending.length === 0) continue;
      const offending = [...c.offending].sort((a, b) => a.ts - b.ts);
      const held = [...c.held].sort((a, b) => a.ts - b.ts);
      const who = c.subscriber === '' ? 'no subscriber recorded' : `to ${c.subscriber}`;
      violations.push({
        message:
          `${[...c.callbacks].join('/')} of pid ${c.pid} (inv ${c.inv}, ${who}) ` +
          `was outstanding under a PT lock: ${[...c.reasons].join('; ')}`,
        events: [...offending, ...held],
      });
    }
    return { checked: callbacks.size, violations };
  },
};
