/**
 * fenced-writes — no page-table write is accepted from a lock holder whose lease was lost
 * (fencing token).
 *
 * Models: the exclusion pte_offset_map_lock() gives set_pte_at()/pte_clear(): only the holder
 * of the split PTE lock writes the PTEs under it. A PT lock here is a Redis lease; a holder
 * that stalls past its TTL loses it, and the next holder gets a higher token. Every
 * page-table script checks the caller's token, so a write carrying token t must never be
 * accepted once a token > t was granted on the same (pid, lock):
 *
 *   holder A (token 3)                    holder B
 *   ptl.acquire ptl:0 token 3
 *   ... stalls past the TTL ...
 *                                         ptl.acquire ptl:0 token 4
 *   pte.set token 3          <- accepted: violation;  pte.reject token 3: the system working
 *
 * Event timestamps are taken when a script's reply is handled, not when Redis ran it, so a
 * write made and the lock released in one script (set-and-unlock) can be reported just after
 * the next holder's acquire (replies on different connections):
 *
 *   Redis:  set+unlock (token 55) → acquire (token 57)
 *   mm-0:   handles acquire reply (ts 1) → handles set+unlock reply (ts 2): pte.set token 55
 *
 * A lease released with `released: true` was held without a break until that release (a
 * lease that expired or was taken over releases with false), so no newer token was granted
 * before it: its writes are not violations, whatever their timestamps say.
 *
 * Writes with token null were made inside one atomic Lua script (no lease to lose) and are
 * not checked. `pte.reject` events are counted in `checked`: each is a fenced write refused.
 */
import { type EventOf, hex } from '@mmlab/protocol';
import { ms } from './events';
import type { Rule, Violation } from './types';

type Acquire = EventOf<'ptl.acquire'>;
type PteWrite = EventOf<'pte.set'> | EventOf<'pte.clear'>;

/**
 * Per (pid, lock): the acquires seen so far, in ts order.
 * Invariant: acquires[0 .. granted) are exactly those with ts < the ts of the last write
 * examined, and maxToken is the highest token among them (0 if none).
 */
interface LockHistory {
  acquires: Acquire[];
  granted: number;
  maxToken: number;
}

export const fencedWrites: Rule<'fenced-writes'> = {
  name: 'fenced-writes',
  models: 'PTE lock exclusion (pte_offset_map_lock) as a Redis lease with a fencing token',
  check(events) {
    const locks = new Map<string, LockHistory>();
    const history = (pid: number, lock: string): LockHistory => {
      const key = `${pid}|${lock}`;
      let h = locks.get(key);
      if (!h) locks.set(key, (h = { acquires: [], granted: 0, maxToken: 0 }));
      return h;
    };
    const violations: Violation[] = [];
    let checked = 0;
    /** (pid, lock, token) of leases released while still held */
    const heldToTheEnd = new Set<string>();
    for (const e of events)
      if (e.kind === 'ptl.release' && e.released) heldToTheEnd.add(`${e.pid}|${e.lock}|${e.token}`);

    const checkWrite = (w: PteWrite, token: number): void => {
      checked++;
      const h = history(w.pid, w.lock);
      // Acquires at the very same ts are not "before" the write: only strictly earlier ones.
      while (h.granted < h.acquires.length && h.acquires[h.granted].ts < w.ts) {
        h.maxToken = Math.max(h.maxToken, h.acquires[h.granted].token);
        h.granted++;
      }
      if (h.maxToken <= token || heldToTheEnd.has(`${w.pid}|${w.lock}|${token}`)) return;
      // Rare: find the acquire that took the lock over (the first newer token granted).
      const newer = h.acquires.slice(0, h.granted).find((a) => a.token > token)!;
      violations.push({
        message:
          `${w.kind} of pid ${w.pid} at ${hex(w.addr)} under ${w.lock} was accepted with token ${token}, ` +
          `${ms(w.ts - newer.ts)} after token ${newer.token} was granted to ${newer.owner}`,
        events: [w, newer],
      });
    };

    for (const e of events) {
      if (e.kind === 'ptl.acquire') history(e.pid, e.lock).acquires.push(e);
      else if ((e.kind === 'pte.set' || e.kind === 'pte.clear') && e.token !== null)
        checkWrite(e, e.token);
      else if (e.kind === 'pte.reject') checked++;
    }
    return { checked, violations };
  },
};
