/**
 * Is the trace whole? Every instance numbers its events (id "<instance>:<seq>", seq 1, 2, ...
 * from its start) and says at the barrier how many it published (flush → published). Core NATS
 * is at most once, so a batch can be lost with nobody noticing: the observer sees a gap only
 * when a later batch of the same instance arrives, and the last ones of a run have none after
 * them. A verdict on a trace with holes is wrong both ways (a lost tlb.flush is a "free under
 * a live TLB entry", a lost write a "stale read"), so the runner checks, asks for a replay, and
 * gives up (unknown) rather than judge a trace that is missing events.
 *
 * A restarted instance numbers from 1 again: its events are split into incarnations where the
 * seq goes back (in ts order), and only the last one is held to `published`; what a killed
 * incarnation had not sent yet is gone with it, as the kernel's printk buffer of a dead box.
 */

/** An instance's missing events: seqs in [from, published] of its last incarnation not held. */
export interface TraceHole {
  instance: string;
  missing: number;
  /** the first missing seq */
  first: number;
  published: number;
}

interface Numbered {
  id: string;
  ts: number;
  instance: string;
}

/**
 * The holes of each instance's last incarnation. `atStart`: the instance's published count
 * when the run began (its events up to there are outside the run's window); an instance
 * missing from it, or that restarted since, is held from seq 1.
 */
export function traceHoles(
  events: readonly Numbered[],
  flushed: ReadonlyArray<{ instance: string; published: number }>,
  atStart: ReadonlyMap<string, number>,
): TraceHole[] {
  const seqs = new Map<string, Array<{ seq: number; ts: number }>>();
  for (const e of events) {
    const prefix = `${e.instance}:`;
    if (!e.id.startsWith(prefix)) continue;
    const seq = Number(e.id.slice(prefix.length));
    if (!Number.isInteger(seq) || seq < 1) continue;
    let l = seqs.get(e.instance);
    if (!l) seqs.set(e.instance, (l = []));
    l.push({ seq, ts: e.ts });
  }
  const holes: TraceHole[] = [];
  for (const { instance, published } of flushed) {
    const all = (seqs.get(instance) ?? []).sort((a, b) => a.ts - b.ts || a.seq - b.seq);
    // the last incarnation: after the last point where the seq went back
    let from = 0;
    for (let i = 1; i < all.length; i++) if (all[i].seq < all[i - 1].seq) from = i;
    const last = all.slice(from);
    const restarted = from > 0 || published < (atStart.get(instance) ?? 0);
    const start = restarted ? 1 : (atStart.get(instance) ?? 0) + 1;
    const have = new Set(last.map((x) => x.seq));
    let missing = 0;
    let first = 0;
    for (let s = start; s <= published; s++)
      if (!have.has(s)) {
        missing++;
        first ||= s;
      }
    if (missing > 0) holes.push({ instance, missing, first, published });
  }
  return holes;
}

export const describeHoles = (holes: readonly TraceHole[]): string =>
  holes
    .map((h) => `${h.instance} ${h.missing} of its events (first seq ${h.first} of ${h.published})`)
    .join('; ');
