/**
 * teardown-before-free — no frame is freed or reused while any CPU TLB entry, sPTE or MTT
 * entry still maps it.
 *
 * Models: the ordering the 2012 patch keeps for invalidate_page ("after the PT lock is
 * dropped but before the old page is freed", MN.rst case A) and that range_start gives every
 * other path: secondary MMUs and CPU TLBs are torn down first, then the page goes back to the
 * allocator. Freeing first is the free-before-invalidate-page injection:
 *
 *   mm (do_wp_page, injected)                 hca0
 *   clear PTE, flush CPU TLBs                 MTT: addr → pfn 12 gen 3
 *   put_page(old): frame.free pfn 12 gen 3    ← violation: hca0 still maps it
 *   invalidate_page(addr)           --->      smap.clear
 *
 * Live translations, per agent: `tlb.fill` (agent, pid, addr → pfn, gen) adds one, replacing
 * the agent's entry for that page; `tlb.flush` (agent, pid, [start, end)) removes the agent's
 * TLB entries of pid in the range; `smap.set` adds a secondary-MMU entry, `smap.clear`
 * (agent, pid, addr; and vm, gfn for a KVM sPTE) removes it; `smap.flush` (agent, pid,
 * [start, end), vm) removes every secondary entry of the agent (of that VM) in the range at once
 * (KVM's generation teardown). A `frame.free` of (pfn, gen) while a translation to (pfn, gen)
 * is live, or a `frame.alloc` of pfn with a newer gen while a translation to an older gen of
 * pfn is live (the frame reused under it), is a violation: [the free or alloc, then the
 * install events of the translations still live, in ts order]. A translation is reported
 * once (at the first free or reuse it outlived). One installed after its frame was already
 * freed is not this rule's business (no-stale-access reports it when it is used).
 *
 * A `cpu.offline` ends every TLB entry of that CPU (fenced: it flushes everything first).
 * An `mn.fenced` ends every secondary entry of that subscriber: mm declared it dead and the
 * memory refuses its accesses from then on (access.refused), as an IOMMU would once the
 * device is detached.
 *
 * Events with the same ts are taken as: removals first, then frees and allocs, then installs
 * (the benefit of the doubt on a tie). `checked` counts the frees and allocs examined.
 */
import { type EventOf, PAGE_SIZE, type TraceEvent, hex, vpnOf } from '@mmlab/protocol';
import type { Rule, Violation } from './types';

type Install = EventOf<'tlb.fill'> | EventOf<'smap.set'>;

interface Translation {
  key: string;
  install: Install;
  /** installed after (pfn, gen) was freed: not this rule's business */
  afterFree: boolean;
  reported: boolean;
}

/** A KVM sPTE's slot also names its VM and guest frame (several may map one host page). */
const slotKey = (
  kind: 'tlb' | 'smap',
  agent: string,
  pid: number,
  vpn: number,
  sp?: { vm?: number; gfn?: number },
) => `${kind}|${agent}|${pid}|${vpn}|${sp?.vm ?? ''}|${sp?.gfn ?? ''}`;

const describeT = (t: Translation): string => {
  const i = t.install;
  const what = i.kind === 'tlb.fill' ? 'TLB entry' : 'secondary-MMU entry';
  return `${i.agent} (${what}, pid ${i.pid} at ${hex(i.addr)}, gen ${i.gen})`;
};

/** Order within one ts: removals (0), frees and allocs (1), installs (2); -1: not ours. */
const phase = (e: TraceEvent): number =>
  e.kind === 'tlb.flush' ||
  e.kind === 'smap.clear' ||
  e.kind === 'smap.flush' ||
  e.kind === 'mn.fenced' ||
  e.kind === 'cpu.offline'
    ? 0
    : e.kind === 'frame.free' || e.kind === 'frame.alloc'
      ? 1
      : e.kind === 'tlb.fill' || e.kind === 'smap.set'
        ? 2
        : -1;

export const teardownBeforeFree: Rule<'teardown-before-free'> = {
  name: 'teardown-before-free',
  models:
    'invalidate_page/range_start before put_page(): no page freed under a TLB, sPTE or MTT entry',
  check(events) {
    /** every live translation, by its slot (one per agent, kind, pid and page) */
    const live = new Map<string, Translation>();
    /** live slots per frame number */
    const byPfn = new Map<number, Set<Translation>>();
    /** live TLB slots per (agent, pid), for range flushes */
    const tlbOf = new Map<string, Set<Translation>>();
    const freed = new Set<string>();
    const violations: Violation[] = [];
    let checked = 0;

    const remove = (t: Translation | undefined) => {
      if (!t) return;
      live.delete(t.key);
      byPfn.get(t.install.pfn)?.delete(t);
      if (t.install.kind === 'tlb.fill')
        tlbOf.get(`${t.install.agent}|${t.install.pid}`)?.delete(t);
    };
    const add = (e: Install) => {
      const kind = e.kind === 'tlb.fill' ? 'tlb' : 'smap';
      const key = slotKey(kind, e.agent, e.pid, vpnOf(e.addr), e.kind === 'smap.set' ? e : {});
      remove(live.get(key));
      const t: Translation = {
        key,
        install: e,
        afterFree: freed.has(`${e.pfn}|${e.gen}`),
        reported: false,
      };
      live.set(key, t);
      let s = byPfn.get(e.pfn);
      if (!s) byPfn.set(e.pfn, (s = new Set()));
      s.add(t);
      if (kind === 'tlb') {
        let l = tlbOf.get(`${e.agent}|${e.pid}`);
        if (!l) tlbOf.set(`${e.agent}|${e.pid}`, (l = new Set()));
        l.add(t);
      }
    };
    const report = (
      e: EventOf<'frame.free'> | EventOf<'frame.alloc'>,
      stale: (t: Translation) => boolean,
    ) => {
      checked++;
      const hit = [...(byPfn.get(e.pfn) ?? [])].filter(
        (t) => !t.afterFree && !t.reported && stale(t),
      );
      if (hit.length === 0) return;
      hit.sort((a, b) => a.install.ts - b.install.ts);
      for (const t of hit) t.reported = true;
      const what =
        e.kind === 'frame.free'
          ? `frame pfn ${e.pfn} gen ${e.gen} freed`
          : `frame pfn ${e.pfn} reused as gen ${e.gen}`;
      violations.push({
        message: `${what} while still mapped by ${hit.map(describeT).join(', ')}`,
        events: [e, ...hit.map((t) => t.install)],
      });
    };

    const apply = (e: TraceEvent) => {
      if (e.kind === 'tlb.flush') {
        const lo = Math.floor(e.start / PAGE_SIZE);
        const hi = Math.ceil(e.end / PAGE_SIZE);
        for (const t of [...(tlbOf.get(`${e.agent}|${e.pid}`) ?? [])]) {
          const vpn = vpnOf(t.install.addr);
          if (vpn >= lo && vpn < hi) remove(t);
        }
      } else if (e.kind === 'smap.clear') {
        remove(live.get(slotKey('smap', e.agent, e.pid, vpnOf(e.addr), e)));
      } else if (e.kind === 'smap.flush') {
        for (const t of [...live.values()]) {
          const i = t.install;
          if (i.kind !== 'smap.set' || i.agent !== e.agent || i.pid !== e.pid) continue;
          if (e.vm !== undefined && i.vm !== e.vm) continue;
          if (i.addr >= e.start && i.addr < e.end) remove(t);
        }
      } else if (e.kind === 'mn.fenced') {
        // A fenced device is detached: memory refuses whatever it still tries, so its
        // remaining entries no longer map anything (they cannot reach a freed frame).
        for (const t of [...live.values()])
          if (t.install.kind === 'smap.set' && t.install.agent === e.subscriber) remove(t);
      } else if (e.kind === 'cpu.offline') {
        // An offline CPU is fenced: it flushes its whole TLB before it touches memory again.
        for (const t of [...live.values()])
          if (t.install.kind === 'tlb.fill' && t.install.agent === e.agent) remove(t);
      } else if (e.kind === 'frame.free') {
        report(e, (t) => t.install.gen === e.gen);
        freed.add(`${e.pfn}|${e.gen}`);
      } else if (e.kind === 'frame.alloc') {
        report(e, (t) => t.install.gen < e.gen);
      } else if (e.kind === 'tlb.fill' || e.kind === 'smap.set') add(e);
    };

    // Sweep in ts order; within one ts: removals, then frees/allocs, then installs.
    for (let i = 0; i < events.length;) {
      let j = i;
      while (j < events.length && events[j].ts === events[i].ts) j++;
      const group = events.slice(i, j).filter((e) => phase(e) >= 0);
      for (let p = 0; p <= 2; p++) for (const e of group) if (phase(e) === p) apply(e);
      i = j;
    }
    return { checked, violations };
  },
};
