/**
 * Interleavings of a secondary MMU's fault and the invalidations racing it, ordered by
 * fast-check's scheduler (fc.scheduler): every `await step(label)` below is a point where the
 * scheduler picks which actor goes on, so each run is one ordering of
 *
 *   invalidation (mm → device)       range_start recv: start_account (count++) on every holder
 *                                    overlapping the range; zap the device's entries under the
 *                                    holder's lock; ack → mm changes the PTEs (munmap clears
 *                                    them; a COW — the CPU's write fault — points them to a
 *                                    copy and writes it) → range_end recv: end_account (seq++,
 *                                    count--) → mm frees the old frames
 *   device / KVM fault               snapshot seq → get_user_pages (reads mm's PTE) → lock →
 *                                    mmuNotifierRecheck → install (or refault, up to 3 tries)
 *   CPU write                        a store through mm's PTE into the frame
 *
 * over the real pure core: NotifierSeq (notifier_seq.ts) and mmuNotifierRecheck
 * (fault_recheck.ts, what apps/hca's pagefault_single_data_segment and apps/kvm's
 * tdp_page_fault call). Two holders' layouts: the HCA's (one ib_umem_odp per MR, one MR per
 * page, start and end paired by range: each accounts the umems overlapping ITS OWN range, and
 * umem_mutex held across the device's wait) and KVM's (one count and seq per VM, mmu_lock held
 * for the zap in one tick).
 *
 * The judge: the checker's own rules (no-map-during-invalidate, teardown-before-free,
 * no-stale-access) over the trace the model emits, plus direct checks once every actor is done:
 * every holder's count is back at 0 (no fault retries for ever), every device entry is mm's
 * current translation of its page (no stale translation after the end) and a device read
 * returns what the CPU last wrote there (coherent reads).
 *
 * v3.7's discipline must hold in every ordering; each injected fault must be caught (fc.assert
 * throws, with the ordering as its counterexample). fast-check samples orderings, it does not
 * enumerate them: each distinct ordering (the sequence of labels in the scheduler's report(),
 * hashed) is counted and printed at the end.
 */
import { createHash } from 'node:crypto';
import { Mutex } from 'async-mutex';
import * as fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { type InvariantName, RULES, sortByTs } from '@mmlab/checker';
import {
  type EventOf,
  MMAP_BASE,
  PAGE_SIZE,
  type TraceEvent,
  type TraceKind,
} from '@mmlab/protocol';
import { mmuNotifierRecheck } from './fault_recheck';
import { NotifierSeq } from './notifier_seq';

type Machine = 'hca' | 'kvm';

/**
 * The injected faults: the lab's own (libs/protocol InjectMode) and two the lab cannot inject
 * on the wire, broken in the model only.
 *   skip-seq-recheck    the HCA installs without re-checking (InjectMode)
 *   kvm-skip-retry      KVM installs without mmu_notifier_retry() (InjectMode)
 *   range-end-mismatch  range_end carries the next range (InjectMode, the haddr bug)
 *   end-without-count   range_end bumps seq but does not lower the count
 *   ack-before-zap      the subscriber acks range_start before zapping its entries
 */
type Bug =
  | 'none'
  | 'skip-seq-recheck'
  | 'kvm-skip-retry'
  | 'range-end-mismatch'
  | 'end-without-count'
  | 'ack-before-zap';

const PID = 1;
/** pages of the modelled region; the HCA has one MR (umem) per page */
const PAGES = 2;
/** fault attempts before EAGAIN (a fault that keeps colliding gives up: safe) */
const TRIES = 3;
const addrOf = (page: number) => MMAP_BASE + page * PAGE_SIZE;
const RULES_JUDGING: InvariantName[] = [
  'no-map-during-invalidate',
  'teardown-before-free',
  'no-stale-access',
];

interface Translation {
  pfn: number;
  gen: number;
}

/** One NotifierSeq with its lock: an ib_umem_odp with umem_mutex, or a VM with mmu_lock. */
interface Holder {
  name: string;
  seq: NotifierSeq;
  lock: Mutex;
  /** pages [lo, hi) it covers */
  lo: number;
  hi: number;
}

type Fields<K extends TraceKind> = Omit<EventOf<K>, 'id' | 'ts' | 'service' | 'instance' | 'kind'>;

/**
 * mm's page table and frames, the device's translations, and the trace. Invariants: a frame
 * is either free or mapped by at most one PTE of the region; the device's table changes only
 * under the page's holder lock (faults) or in a zap.
 */
class World {
  readonly agent: string;
  readonly holders: Holder[];
  readonly events: TraceEvent[] = [];
  /** mm: page → frame */
  readonly pte = new Map<number, Translation>();
  /** pfn → frame */
  readonly frames = new Map<number, { gen: number; free: boolean; value: number }>();
  /** the device's table: page → frame */
  readonly table = new Map<number, Translation>();
  private ts = 0;
  private id = 0;
  private nextPfn = 10;
  private nextValue = 100;

  constructor(readonly machine: Machine) {
    this.agent = machine === 'hca' ? 'hca0' : 'kvm0';
    this.holders =
      machine === 'hca'
        ? Array.from({ length: PAGES }, (_, p) => holder(`mr${p}`, p, p + 1))
        : [holder('vm0', 0, PAGES)];
    for (let p = 0; p < PAGES; p++) {
      const t = this.alloc(this.nextValue++);
      this.pte.set(p, t);
      this.install(p, t); // the device already maps every page
    }
  }

  emit<K extends TraceKind>(kind: K, fields: Fields<K>): void {
    const e = { id: `e${++this.id}`, ts: ++this.ts, service: 'model', instance: 'model', kind };
    this.events.push({ ...e, ...fields } as unknown as TraceEvent);
  }

  overlapping(lo: number, hi: number): Holder[] {
    return this.holders.filter((h) => h.lo < hi && lo < h.hi);
  }

  holderOf(page: number): Holder {
    return this.overlapping(page, page + 1)[0];
  }

  /** a free frame again (gen + 1) or a new one, holding value */
  alloc(value: number): Translation {
    const reuse = [...this.frames].find(([, f]) => f.free);
    const pfn = reuse ? reuse[0] : this.nextPfn++;
    const gen = reuse ? reuse[1].gen + 1 : 1;
    this.frames.set(pfn, { gen, free: false, value });
    this.emit('frame.alloc', { pfn, gen });
    return { pfn, gen };
  }

  free(t: Translation): void {
    this.frames.get(t.pfn)!.free = true;
    this.emit('frame.free', t);
  }

  install(page: number, t: Translation): void {
    this.table.set(page, t);
    this.emit('smap.set', {
      agent: this.agent,
      pid: PID,
      addr: addrOf(page),
      ...t,
      writable: true,
    });
  }

  /** remove the device's entries of [lo, hi) */
  zap(lo: number, hi: number): void {
    for (let p = lo; p < hi; p++) {
      const t = this.table.get(p);
      if (!t) continue;
      this.table.delete(p);
      this.emit('smap.clear', { agent: this.agent, pid: PID, addr: addrOf(p), ...t });
    }
  }

  value(): number {
    return this.nextValue++;
  }

  /** Every problem once all actors are done: the checker's rules, then the direct checks. */
  judge(): string[] {
    // the device reads every page it still maps (what it would get)
    for (const [p, t] of this.table) {
      const f = this.frames.get(t.pfn)!;
      this.emit('access', {
        agent: this.agent,
        pid: PID,
        addr: addrOf(p),
        rw: 'read',
        value: f.value,
        ...t,
        frameGen: f.gen,
        frameFree: f.free,
        tStart: this.ts,
        tEnd: this.ts,
      });
    }
    const sorted = sortByTs(this.events);
    const problems = RULES_JUDGING.flatMap((name) =>
      RULES[name]!.check(sorted, { softlockupMs: 1000 }).violations.map(
        (v) => `${name}: ${v.message}`,
      ),
    );
    for (const h of this.holders)
      if (h.seq.notifiersCount !== 0)
        problems.push(
          `${h.name}: notifiers_count ${h.seq.notifiersCount} after every invalidation ended ` +
            `(its faults retry for ever)`,
        );
    for (const [p, t] of this.table) {
      const cur = this.pte.get(p);
      if (cur?.pfn !== t.pfn || cur.gen !== t.gen)
        problems.push(
          `stale translation: the device maps page ${p} → pfn ${t.pfn} gen ${t.gen}, mm ` +
            (cur ? `→ pfn ${cur.pfn} gen ${cur.gen}` : 'has no page there'),
        );
      const seen = this.frames.get(t.pfn)!.value;
      const want = cur ? this.frames.get(cur.pfn)!.value : undefined;
      if (cur && seen !== want)
        problems.push(
          `incoherent read: the device reads ${seen} at page ${p}, the CPU wrote ${want}`,
        );
    }
    return problems;
  }
}

const holder = (name: string, lo: number, hi: number): Holder => ({
  name,
  seq: new NotifierSeq(),
  lock: new Mutex(),
  lo,
  hi,
});

type Step = (label: string) => Promise<unknown>;

interface Inv {
  /** munmap (zap_page_range) or a COW write fault (do_wp_page: the CPU's PTE change) */
  kind: 'munmap' | 'cow';
  page: number;
  pages: number;
}

/**
 * One invalidation, v3.7's order (zap_page_range, do_wp_page with 6bdb913f): range_start
 * before the PTE change, range_end after it, the old frames freed last.
 */
async function invalidation(w: World, step: Step, i: number, inv: Inv, bug: Bug): Promise<void> {
  const id = `inv${i}`;
  const lo = inv.page;
  const hi = Math.min(PAGES, lo + inv.pages);
  await step(`${id} ${inv.kind} range_start [${lo}, ${hi})`);
  w.emit('mn.recv', {
    agent: w.agent,
    pid: PID,
    callback: 'invalidate_range_start',
    inv: id,
    start: addrOf(lo),
    end: addrOf(hi),
  });
  // start_account (kvm->mmu_notifier_count++), in the tick the callback arrives
  const counted = w.overlapping(lo, hi);
  for (const h of counted) h.seq.startAccount();
  const zap = async () => {
    for (const h of counted) {
      const unlock = await h.lock.acquire();
      try {
        w.zap(Math.max(lo, h.lo), Math.min(hi, h.hi));
        // the HCA waits for the device's ZAP UMR under umem_mutex; KVM zaps in one tick
        if (w.machine === 'hca') await step(`${id} device zap completion (${h.name})`);
      } finally {
        unlock();
      }
    }
  };
  if (bug !== 'ack-before-zap') await zap();
  // the ack: mm goes on and changes the PTEs
  await step(`${id} ${inv.kind} PTEs`);
  const old: Translation[] = [];
  for (let p = lo; p < hi; p++) {
    const t = w.pte.get(p);
    if (!t) continue;
    old.push(t);
    if (inv.kind === 'munmap') w.pte.delete(p);
    else w.pte.set(p, w.alloc(w.value())); // copy, then the CPU's store lands in the copy
  }
  await step(`${id} range_end`);
  // range-end-mismatch: the end names the next range (the haddr bug)
  const [elo, ehi] = bug === 'range-end-mismatch' ? [hi, hi + (hi - lo)] : [lo, hi];
  w.emit('mn.recv', {
    agent: w.agent,
    pid: PID,
    callback: 'invalidate_range_end',
    inv: id,
    start: addrOf(elo),
    end: addrOf(ehi),
  });
  // end_account: KVM's count is per VM (any end lowers it); ib_umem_odp's per umem, by the
  // end's own range
  const ended = w.machine === 'kvm' ? w.holders : w.overlapping(elo, ehi);
  for (const h of ended) {
    if (bug === 'end-without-count') h.seq.bump();
    else h.seq.endAccount();
  }
  await step(`${id} free`);
  for (const t of old) w.free(t);
  if (bug === 'ack-before-zap') {
    await step(`${id} late zap`);
    await zap();
  }
}

/** A network page fault / EPT violation on page: pagefault_single_data_segment, tdp_page_fault. */
async function fault(w: World, step: Step, j: number, page: number, bug: Bug): Promise<string> {
  const id = `fault${j}`;
  const h = w.holderOf(page);
  for (let t = 0; t < TRIES; t++) {
    await step(`${id} snapshot (page ${page})`);
    const snap = h.seq.snapshot();
    await step(`${id} gup`);
    const pte = w.pte.get(page);
    if (!pte) return 'EFAULT';
    await step(`${id} lock`);
    const unlock = await h.lock.acquire();
    try {
      const r = mmuNotifierRecheck(h.seq, snap.seq, {
        skip: bug === 'skip-seq-recheck' || bug === 'kvm-skip-retry',
      });
      if (r === 'install') {
        w.install(page, pte);
        return 'installed';
      }
    } finally {
      unlock();
    }
  }
  return 'EAGAIN';
}

async function cpuWrite(w: World, step: Step, k: number, page: number): Promise<void> {
  await step(`cpu${k} store (page ${page})`);
  const t = w.pte.get(page);
  if (t) w.frames.get(t.pfn)!.value = w.value();
}

const scenario = fc.record({
  invs: fc.array(
    fc.record({
      kind: fc.constantFrom<Inv['kind']>('munmap', 'cow'),
      page: fc.nat(PAGES - 1),
      pages: fc.integer({ min: 1, max: PAGES }),
    }),
    { minLength: 1, maxLength: 2 },
  ),
  faults: fc.array(fc.nat(PAGES - 1), { minLength: 1, maxLength: 2 }),
  writes: fc.array(fc.nat(PAGES - 1), { maxLength: 1 }),
});

/** distinct orderings run, per property (hashes of the scheduler's report) */
const orderings = new Map<string, Set<string>>();
const runs = new Map<string, number>();

function property(name: string, machine: Machine, bug: Bug) {
  const seen = new Set<string>();
  orderings.set(name, seen);
  runs.set(name, 0);
  return fc.asyncProperty(fc.scheduler(), scenario, async (s, sc) => {
    const w = new World(machine);
    const step: Step = (label) => s.schedule(Promise.resolve(label), label);
    const actors = [
      ...sc.invs.map((inv, i) => invalidation(w, step, i, inv, bug)),
      ...sc.faults.map((p, j) => fault(w, step, j, p, bug)),
      ...sc.writes.map((p, k) => cpuWrite(w, step, k, p)),
    ];
    await s.waitFor(Promise.all(actors));
    const order = s
      .report()
      .map((r) => r.label)
      .join('\n');
    seen.add(
      createHash('sha1')
        .update(`${JSON.stringify(sc)}\n${order}`)
        .digest('hex'),
    );
    runs.set(name, runs.get(name)! + 1);
    const problems = w.judge();
    if (problems.length > 0) throw new Error(problems.join('\n'));
  });
}

const SEED = 15;
/** runs of each v3.7 property (each one ordering; about 1 ms a run) */
const V37_RUNS = 1000;
/** at most this many runs to find an injected fault's counterexample */
const NUM_RUNS = 400;

/** fc.assert's error for a property that must fail, or null when it held. */
async function mustFail(p: fc.IAsyncProperty<unknown>, numRuns = NUM_RUNS): Promise<Error | null> {
  try {
    await fc.assert(p, { seed: SEED, numRuns });
    return null;
  } catch (e) {
    return e as Error;
  }
}

/** The shrunk counterexample's ordering and the problem fast-check reports, for the log. */
function show(name: string, e: Error): void {
  const ordering = e.message.split('\n').filter((l) => l.startsWith('-> '));
  const found = (e.cause as Error).message.split('\n');
  console.log(
    `[${name}] caught, shrunk to:\n  ${ordering.join('\n  ')}\n  ⇒ ${found.join('\n  ⇒ ')}`,
  );
}

describe('mmuNotifierRecheck (the re-check under the lock)', () => {
  it('installs only when nothing reached the holder since the snapshot', () => {
    const n = new NotifierSeq();
    const s = n.sequence;
    expect(mmuNotifierRecheck(n, s)).toBe('install');
    expect(mmuNotifierRecheck(n, s, { countersActive: false })).toBe('refault');
    n.startAccount();
    expect(mmuNotifierRecheck(n, s)).toBe('wait'); // in progress
    expect(mmuNotifierRecheck(n, s, { skip: true })).toBe('install'); // the injected bug
    n.endAccount();
    expect(mmuNotifierRecheck(n, s)).toBe('refault'); // ended meanwhile: seq moved
    expect(mmuNotifierRecheck(n, n.sequence)).toBe('install');
  });
});

describe('interleavings (fast-check scheduler): v3.7 holds in every ordering run', () => {
  it.each<Machine>(['hca', 'kvm'])(
    '%s: fault vs invalidate start/end vs install',
    async (m) => {
      await fc.assert(property(`v3.7 ${m}`, m, 'none'), { seed: SEED, numRuns: V37_RUNS });
      expect(orderings.get(`v3.7 ${m}`)!.size).toBeGreaterThan(V37_RUNS / 2);
    },
    60_000,
  ); // about 1 s on an idle machine; CPU-bound, so a loaded one stretches it
});

describe('interleavings: every injected fault is caught with an ordering', () => {
  const cases: [Machine, Bug, RegExp][] = [
    // the device-fault-retry machine (HCA ODP)
    ['hca', 'skip-seq-recheck', /no-map-during-invalidate: hca0 installed/],
    // the KVM-retry machine
    ['kvm', 'kvm-skip-retry', /no-map-during-invalidate: kvm0 installed/],
    // the notifier machine: start/end accounting and the subscriber's ack
    ['hca', 'range-end-mismatch', /notifiers_count|no-map-during-invalidate/],
    ['kvm', 'end-without-count', /vm0: notifiers_count 1 after every invalidation ended/],
    ['hca', 'end-without-count', /mr\d: notifiers_count 1 after every invalidation ended/],
    ['hca', 'ack-before-zap', /teardown-before-free/],
    ['kvm', 'ack-before-zap', /teardown-before-free/],
  ];
  it.each(cases)(
    '%s, %s',
    async (m, bug, want) => {
      const name = `${bug} ${m}`;
      const e = await mustFail(property(name, m, bug));
      expect(e?.message).toMatch(/schedulerFor/); // the counterexample is an ordering
      expect((e?.cause as Error | undefined)?.message).toMatch(want); // what the judge found
      show(name, e!);
    },
    60_000,
  );
});

afterAll(() => {
  let total = 0;
  const lines = [...orderings].map(([name, s]) => {
    total += s.size;
    return `  ${name}: ${s.size} distinct orderings in ${runs.get(name)} runs`;
  });
  console.log(`interleavings explored: ${total} distinct orderings\n${lines.join('\n')}`);
});
