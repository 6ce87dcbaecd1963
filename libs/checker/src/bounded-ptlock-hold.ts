/**
 * bounded-ptlock-hold — no PT lock is held longer than the soft-lockup threshold.
 *
 * Models: the soft-lockup watchdog ("BUG: soft lockup - CPU#n stuck for 22s!"), which is what
 * a spinlock held across a sleeping notifier callback ends in; the patch exists so that
 * invalidate_range_start/invalidate_page run outside the PT lock.
 *
 * A hold is a ptl.acquire paired with the ptl.release of the same (pid, lock, token); its
 * length is release.heldMs, as the holder measured it (released: false, a lease that had
 * already expired, still counts: the holder thought it held the lock that long). An acquire
 * never released is held until the same (pid, lock) is acquired with another token (the lease
 * expired and was taken over), or else until the last event of the trace.
 */
import type { EventOf } from '@mmlab/protocol';
import { ms } from './events';
import type { Rule, Violation } from './types';

type Acquire = EventOf<'ptl.acquire'>;
type Release = EventOf<'ptl.release'>;

export const boundedPtlockHold: Rule<'bounded-ptlock-hold'> = {
  name: 'bounded-ptlock-hold',
  models: 'the soft-lockup watchdog (watchdog_thresh) firing on a spinlock held too long',
  check(events, { softlockupMs }) {
    if (events.length === 0) return { checked: 0, violations: [] };
    const lastTs = events[events.length - 1].ts;
    const acquires: Acquire[] = [];
    // Releases per (pid, lock, token), in ts order; pairing by key (not by position in the
    // trace) tolerates a release stamped before its acquire by a skewed clock.
    const releases = new Map<string, Release[]>();
    // Acquires per (pid, lock), in ts order, to find who took over a lease never released.
    const byLock = new Map<string, Acquire[]>();
    const positionOnLock = new Map<Acquire, number>();
    const holdKey = (e: Acquire | Release) => `${e.pid}|${e.lock}|${e.token}`;
    const lockKey = (e: Acquire | Release) => `${e.pid}|${e.lock}`;
    const push = <T>(m: Map<string, T[]>, k: string, v: T) => {
      const l = m.get(k);
      if (l) l.push(v);
      else m.set(k, [v]);
    };
    for (const e of events) {
      if (e.kind === 'ptl.acquire') {
        acquires.push(e);
        push(byLock, lockKey(e), e);
        positionOnLock.set(e, byLock.get(lockKey(e))!.length - 1);
      } else if (e.kind === 'ptl.release') push(releases, holdKey(e), e);
    }

    const violations: Violation[] = [];
    let checked = 0;
    const who = (e: Acquire | Release) =>
      `${e.lock} of pid ${e.pid} (token ${e.token}, ${e.owner})`;
    for (const a of acquires) {
      checked++;
      const r = releases.get(holdKey(a))?.shift();
      if (r) {
        if (r.heldMs > softlockupMs)
          violations.push({
            message: `${who(a)} held for ${ms(r.heldMs)}, over the ${ms(softlockupMs)} soft-lockup threshold`,
            events: [a, r],
          });
        continue;
      }
      const onLock = byLock.get(lockKey(a))!;
      let takeover: Acquire | undefined;
      for (let i = positionOnLock.get(a)! + 1; i < onLock.length && !takeover; i++)
        if (onLock[i].token !== a.token) takeover = onLock[i];
      const held = (takeover ? takeover.ts : lastTs) - a.ts;
      if (held > softlockupMs)
        violations.push({
          message:
            `${who(a)} never released: held ${ms(held)} until ` +
            (takeover ? `token ${takeover.token} took the lock over` : 'the end of the trace') +
            `, over the ${ms(softlockupMs)} soft-lockup threshold`,
          events: takeover ? [a, takeover] : [a],
        });
    }
    // Releases whose acquire is not in the trace (it started before the trace, or was lost):
    // heldMs alone still tells how long the lock was held.
    for (const rs of releases.values())
      for (const r of rs) {
        checked++;
        if (r.heldMs > softlockupMs)
          violations.push({
            message: `${who(r)} held for ${ms(r.heldMs)} (acquire not in the trace), over the ${ms(softlockupMs)} soft-lockup threshold`,
            events: [r],
          });
      }
    return { checked, violations };
  },
};
