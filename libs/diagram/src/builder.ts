/**
 * From trace events to the sequence-diagram model, incrementally: push() events as they
 * stream in, read model() when drawing. Events are kept in a bounded buffer sorted by ts
 * (duplicates by id ignored); an event older than the newest one already placed (a late
 * arrival) rebuilds the model from the buffer, and so does a new filter.
 *
 * How each element is derived (one pass, in ts order):
 *   lifeline  every emitting instance, and every instance named as an agent or subscriber
 *   row       every event the filter keeps, on the lifeline of its instance
 *   messages  fault.begin: agent → mm, fault.end: mm → agent (a CPU's trap; rows of mm's events);
 *             npf.begin (device) → the first fault.begin it causes on mm, and mm's last
 *             fault.end → npf.end, and a KVM guest fault the same way (kvm.fault.begin and
 *             kvm.fault.end: its gup faults pages in through mm); a CPU's tlb.flush ← the mm
 *             op that sent it (op ids match),
 *             from that op's latest row on mm (it holds the PT lock then);
 *             mn.send → mn.recv and mn.done → mn.ack (matched by inv, subscriber, callback)
 *   bars      ptl.acquire → ptl.release (pid, lock, token) on mm; mn.recv → mn.done on the
 *             subscriber (it may sleep there); npf.begin → npf.end on the device,
 *             kvm.fault.begin → kvm.fault.end on the KVM (labelled "guest fault")
 *   groups    one per inv: every event carrying it (mn.range_start/end, mn.page, mn.release,
 *             mn.send/ack, mn.recv/done, guards), the events of the dispatching op between its
 *             mn.range_start and mn.range_end (PT locks, PTE clears, the CPUs' tlb.flush, frees),
 *             and the events of the subscriber's callback op (from mn.recv to mn.done)
 *   markers   the checker's violations (by event id), the in-trace guards (might_sleep,
 *             mn.ptl_held), and warnings (lost leases, rejected writes, refused or stale accesses)
 */
import type { EventOf, TraceEvent, TraceKind } from '@mmlab/protocol';
import { PAGE_SIZE } from '@mmlab/protocol/units';
import { describeEvent, eventRange } from './describe';
import { LifelineSet, kindOfAgent } from './lifelines';
import type {
  Bar,
  DiagramFilter,
  DiagramModel,
  DiagramRow,
  GroupKind,
  InvGroup,
  Marker,
  MarkerKind,
  Message,
  ViolationInput,
} from './types';

export const DEFAULT_CAP = 50_000;
/** Association maps (op → pid, op → inv, ...) are trimmed, oldest first, beyond this. */
const MAX_STATE = 100_000;

export interface BuilderOptions {
  /** events kept; beyond it the oldest tenth is dropped at once (default 50,000) */
  cap?: number;
  filter?: DiagramFilter;
  violations?: readonly ViolationInput[];
}

type Ev<K extends TraceKind> = EventOf<K>;

interface RowRef {
  row: number;
  lifeline: string;
  id: string;
}
interface OpenNpf extends RowRef {
  /** npf (an HCA's network page fault) or "guest fault" (a KVM's tdp_page_fault) */
  what: string;
  addr: number;
  pages: number;
  /** the request arrow to mm is drawn (the first fault of the npf) */
  sent: boolean;
  lastFaultEnd: (RowRef & { mm: string; result: string }) | null;
}

const overlaps = (a: { start: number; end: number }, b: { start: number; end: number }) =>
  a.start < b.end && b.start < a.end;

function trimMap<K, V>(m: Map<K, V>, max = MAX_STATE): void {
  if (m.size <= max) return;
  let drop = m.size - Math.floor(max * 0.9);
  for (const k of m.keys()) {
    if (drop-- <= 0) break;
    m.delete(k);
  }
}

function pushTo<K, V>(m: Map<K, V[]>, k: K, v: V): void {
  const l = m.get(k);
  if (l) l.push(v);
  else m.set(k, [v]);
}

function shiftFrom<K, V>(m: Map<K, V[]>, k: K): V | undefined {
  const l = m.get(k);
  if (!l) return undefined;
  const v = l.shift();
  if (l.length === 0) m.delete(k);
  return v;
}

/** A group's kind, from its first event (the callback tells, when it is a callback). */
function groupKindOf(e: TraceEvent): GroupKind {
  if (e.kind === 'mn.range_start' || e.kind === 'mn.range_end') return 'range';
  if (e.kind === 'mn.page') return 'page';
  if (e.kind === 'mn.release') return 'release';
  if (!('callback' in e)) return 'callback';
  const cb = e.callback;
  if (cb === 'invalidate_range_start' || cb === 'invalidate_range_end') return 'range';
  if (cb === 'invalidate_page') return 'page';
  return cb === 'release' ? 'release' : 'callback';
}

/** Stable sort by ts (Array.prototype.sort is stable). */
const byTs = (a: TraceEvent, b: TraceEvent): number => a.ts - b.ts;

function mergeSorted(a: TraceEvent[], b: TraceEvent[]): TraceEvent[] {
  const out: TraceEvent[] = new Array<TraceEvent>(a.length + b.length);
  let i = 0;
  let j = 0;
  let k = 0;
  while (i < a.length && j < b.length) out[k++] = b[j].ts < a[i].ts ? b[j++] : a[i++];
  while (i < a.length) out[k++] = a[i++];
  while (j < b.length) out[k++] = b[j++];
  return out;
}

export class DiagramBuilder {
  readonly cap: number;
  private filter: DiagramFilter;
  private violations: readonly ViolationInput[];

  // ---- the buffer ------------------------------------------------------------------------
  private raw: TraceEvent[] = [];
  /** sequence number of raw[0] */
  private rawBase = 0;
  private readonly seen = new Set<string>();
  private evicted = 0;
  private version = 0;

  // ---- the model -------------------------------------------------------------------------
  private readonly lifelines = new LifelineSet();
  private firstRow = 0;
  private nextRow = 0;
  private rows: DiagramRow[] = [];
  /** rowSeq[i]: the buffer sequence number of rows[i]'s event */
  private rowSeq: number[] = [];
  private readonly rowById = new Map<string, number>();
  /** by end row (the row of the later event) */
  private messages: Message[] = [];
  /** by end row */
  private closedBars: Bar[] = [];
  private maxSpan = 0;
  private groups: InvGroup[] = [];
  private readonly groupByInv = new Map<string, InvGroup>();
  private readonly rangeEnded = new Set<string>();
  private eventMarkers: Marker[] = [];
  private violationMarkers: Marker[] = [];
  private markers: Marker[] | null = null;
  /** lifelines with a row or a message end, and the list drawn (null: to recompute) */
  private readonly shownLifelines = new Set<string>();
  private lifelineList: ReturnType<LifelineSet['list']> | null = null;
  /** violations whose events have not been placed yet, by event id */
  private readonly pendingViolations = new Map<string, ViolationInput[]>();
  private cached: DiagramModel | null = null;

  // ---- association state (every event, filtered or not) ----------------------------------
  private readonly opPids = new Map<string, number[]>();
  private readonly opTouched = new Set<string>();
  private readonly invTouched = new Set<string>();
  /** op → the inv whose range it is inside (mn.range_start .. mn.range_end) */
  private readonly opOpenInv = new Map<string, string>();
  /** a subscriber's callback op → its inv (mn.recv .. mn.done) */
  private readonly subOpInv = new Map<string, string>();

  // ---- pairing state (shown events only) -------------------------------------------------
  private readonly faults = new Map<string, RowRef>();
  private readonly npfs = new Map<string, OpenNpf>();
  private readonly sends = new Map<string, Array<RowRef & { underLock: boolean }>>();
  private readonly dones = new Map<string, RowRef[]>();
  private readonly busy = new Map<string, RowRef & { label: string; inv: string }>();
  private readonly ptls = new Map<string, RowRef & { label: string; inv?: string }>();
  private readonly opLastMmRow = new Map<string, RowRef>();

  constructor(opts: BuilderOptions = {}) {
    this.cap = opts.cap ?? DEFAULT_CAP;
    if (!Number.isInteger(this.cap) || this.cap < 10)
      throw new RangeError(`cap must be an integer >= 10, got ${this.cap}`);
    this.filter = opts.filter ?? {};
    this.violations = opts.violations ?? [];
    this.indexViolations();
  }

  /** Add events (any order; already-seen ids are ignored). */
  push(events: readonly TraceEvent[]): void {
    const fresh: TraceEvent[] = [];
    for (const e of events) {
      if (this.seen.has(e.id)) continue;
      this.seen.add(e.id);
      fresh.push(e);
    }
    if (fresh.length === 0) return;
    fresh.sort(byTs);
    const last = this.raw.length > 0 ? this.raw[this.raw.length - 1].ts : -Infinity;
    if (fresh[0].ts < last) {
      this.raw = mergeSorted(this.raw, fresh);
      this.rebuild();
    } else {
      for (const e of fresh) {
        this.raw.push(e);
        this.feed(e, this.rawBase + this.raw.length - 1);
      }
    }
    if (this.raw.length > this.cap)
      this.evict(this.raw.length - this.cap + Math.floor(this.cap / 10));
    this.touch();
  }

  setFilter(filter: DiagramFilter): void {
    this.filter = filter;
    this.rebuild();
    this.touch();
  }

  getFilter(): DiagramFilter {
    return this.filter;
  }

  /** Replace the violations marked (GET /invariants' verdicts, flattened). */
  setViolations(violations: readonly ViolationInput[]): void {
    this.violations = violations;
    this.indexViolations();
    for (const g of this.groups) g.flagged = false;
    for (const m of this.eventMarkers) this.flag(m.row);
    this.violationMarkers = [];
    this.markers = null;
    for (const [id, vs] of [...this.pendingViolations]) {
      const row = this.rowById.get(id);
      if (row !== undefined) this.placeViolations(id, row, vs);
    }
    this.touch();
  }

  /** Forget every event (the observer was reset). */
  clear(): void {
    this.raw = [];
    this.rawBase = 0;
    this.seen.clear();
    this.evicted = 0;
    this.lifelines.clear();
    this.rebuild();
    this.touch();
  }

  /** The events in the buffer, sorted by ts. */
  events(): readonly TraceEvent[] {
    return this.raw;
  }

  rowOf(eventId: string): number | undefined {
    return this.rowById.get(eventId);
  }

  group(inv: string): InvGroup | undefined {
    return this.groupByInv.get(inv);
  }

  /** The model; the same object until the next change. Its arrays are live: do not mutate. */
  model(): DiagramModel {
    if (this.cached) return this.cached;
    const open: Bar[] = [];
    for (const p of this.ptls.values())
      open.push({
        kind: 'ptl',
        lifeline: p.lifeline,
        startRow: p.row,
        endRow: null,
        label: p.label,
        inv: p.inv,
        events: [p.id],
      });
    for (const b of this.busy.values())
      open.push({
        kind: 'sleep',
        lifeline: b.lifeline,
        startRow: b.row,
        endRow: null,
        label: b.label,
        inv: b.inv,
        events: [b.id],
      });
    for (const n of this.npfs.values())
      open.push({
        kind: 'npf',
        lifeline: n.lifeline,
        startRow: n.row,
        endRow: null,
        label: n.what,
        events: [n.id],
      });
    this.lifelineList ??= this.lifelines
      .list(this.filter.hideObserver !== false)
      .filter((l) => this.shownLifelines.has(l.id) || !this.filtering());
    this.markers ??=
      this.violationMarkers.length === 0
        ? this.eventMarkers
        : this.eventMarkers.concat(this.violationMarkers).sort((a, b) => a.row - b.row);
    this.cached = {
      lifelines: this.lifelineList,
      firstRow: this.firstRow,
      rows: this.rows,
      messages: this.messages,
      bars: this.closedBars,
      openBars: open.filter((b) => b.startRow >= this.firstRow),
      groups: this.groups,
      markers: this.markers,
      maxSpan: this.maxSpan,
      counts: { buffered: this.raw.length, shown: this.rows.length, evicted: this.evicted },
      version: this.version,
    };
    return this.cached;
  }

  // ---- internals --------------------------------------------------------------------------

  /** A filter other than hideObserver is set: lifelines with nothing shown are left out. */
  private filtering(): boolean {
    const f = this.filter;
    return (
      (f.pids !== undefined && f.pids.length > 0) ||
      f.addr !== undefined ||
      f.subscribers !== undefined ||
      (f.inv !== undefined && f.inv !== '')
    );
  }

  private touch(): void {
    this.version++;
    this.cached = null;
    // LifelineSet may have learnt an instance (or its service) without a new row
    this.lifelineList = null;
  }

  private indexViolations(): void {
    this.pendingViolations.clear();
    for (const v of this.violations)
      for (const e of v.events) pushTo(this.pendingViolations, e.id, v);
  }

  /** Reset the model and the state and feed the whole buffer again. */
  private rebuild(): void {
    this.firstRow = 0;
    this.nextRow = 0;
    this.rows = [];
    this.rowSeq = [];
    this.rowById.clear();
    this.messages = [];
    this.closedBars = [];
    this.maxSpan = 0;
    this.groups = [];
    this.groupByInv.clear();
    this.rangeEnded.clear();
    this.eventMarkers = [];
    this.violationMarkers = [];
    this.markers = null;
    this.shownLifelines.clear();
    this.lifelineList = null;
    this.indexViolations();
    for (const m of [
      this.opPids,
      this.opOpenInv,
      this.subOpInv,
      this.faults,
      this.npfs,
      this.sends,
      this.dones,
      this.busy,
      this.ptls,
      this.opLastMmRow,
    ])
      m.clear();
    this.opTouched.clear();
    this.invTouched.clear();
    for (let i = 0; i < this.raw.length; i++) this.feed(this.raw[i], this.rawBase + i);
  }

  /** Drop the n oldest events of the buffer and what is drawn only from them. */
  private evict(n: number): void {
    const gone = this.raw.splice(0, n);
    for (const e of gone) this.seen.delete(e.id);
    this.rawBase += n;
    this.evicted += n;
    let r = 0;
    while (r < this.rowSeq.length && this.rowSeq[r] < this.rawBase) r++;
    if (r === 0) return;
    for (const row of this.rows.slice(0, r)) this.rowById.delete(row.event.id);
    this.rows.splice(0, r);
    this.rowSeq.splice(0, r);
    const first = (this.firstRow += r);
    this.messages = this.messages.filter((m) => Math.max(m.fromRow, m.toRow) >= first);
    this.closedBars = this.closedBars.filter((b) => b.endRow === null || b.endRow >= first);
    this.groups = this.groups.filter((g) => {
      if (g.endRow >= first) {
        if (g.startRow < first) g.rows = g.rows.filter((x) => x >= first);
        return true;
      }
      this.groupByInv.delete(g.inv);
      this.rangeEnded.delete(g.inv);
      return false;
    });
    this.eventMarkers = this.eventMarkers.filter((m) => m.row >= first);
    this.violationMarkers = this.violationMarkers.filter((m) => m.row >= first);
    this.markers = null;
  }

  /** The subscriber an event is about, if any (for the subscriber filter). */
  private subscriberOf(e: TraceEvent): string | null {
    if ('subscriber' in e) return e.subscriber;
    if (e.service === 'hca' || e.service === 'kvm' || e.service === 'dev') return e.instance;
    if ('agent' in e && this.lifelines.get(e.agent)?.kind === 'subscriber') return e.agent;
    if ('agent' in e && kindOfAgent(e.agent) === 'subscriber') return e.agent;
    return null;
  }

  private pidsOf(e: TraceEvent): readonly number[] | undefined {
    if (e.kind === 'process.fork') return [e.pid, e.child];
    if ('pid' in e) return [e.pid];
    return e.op !== undefined ? this.opPids.get(e.op) : undefined;
  }

  /** Group membership, and the op → pid / address associations the filters use. */
  private associate(e: TraceEvent): string | undefined {
    const op = e.op;
    if (op !== undefined && 'pid' in e) {
      const l = this.opPids.get(op);
      if (!l) {
        this.opPids.set(op, [e.pid]);
        trimMap(this.opPids);
      } else if (!l.includes(e.pid)) l.push(e.pid);
    }
    let inv: string | undefined;
    if ('inv' in e) {
      inv = e.inv;
      if (e.kind === 'mn.range_start' && op !== undefined) {
        this.opOpenInv.set(op, inv);
        trimMap(this.opOpenInv);
      } else if (e.kind === 'mn.range_end' && op !== undefined) this.opOpenInv.delete(op);
      else if (e.kind === 'mn.recv' && op !== undefined) {
        this.subOpInv.set(op, inv);
        trimMap(this.subOpInv);
      } else if (e.kind === 'mn.done' && op !== undefined) this.subOpInv.delete(op);
    } else if (op !== undefined) inv = this.subOpInv.get(op) ?? this.opOpenInv.get(op);
    const want = this.filter.addr;
    if (want) {
      const r = eventRange(e);
      if (r && overlaps(r, want)) {
        if (op !== undefined) this.opTouched.add(op);
        if (inv !== undefined) this.invTouched.add(inv);
      }
    }
    return inv;
  }

  private passes(e: TraceEvent, inv: string | undefined): boolean {
    const f = this.filter;
    if (f.hideObserver !== false && e.service === 'observer') return false;
    if (f.inv !== undefined && f.inv !== '' && (inv === undefined || !inv.includes(f.inv)))
      return false;
    if (f.subscribers) {
      const s = this.subscriberOf(e);
      if (s !== null && !f.subscribers.includes(s)) return false;
    }
    if (f.pids && f.pids.length > 0) {
      const pids = this.pidsOf(e);
      if (!pids || !pids.some((p) => f.pids!.includes(p))) return false;
    }
    if (f.addr) {
      const r = eventRange(e);
      if (r) return overlaps(r, f.addr);
      return (
        (e.op !== undefined && this.opTouched.has(e.op)) ||
        (inv !== undefined && this.invTouched.has(inv))
      );
    }
    return true;
  }

  private feed(e: TraceEvent, seq: number): void {
    const inv = this.associate(e);
    if (!this.passes(e, inv)) return;
    const row = this.nextRow++;
    const lifeline = e.instance;
    this.lifelines.emitter(lifeline, e.service);
    this.show(lifeline);
    this.rows.push(
      inv === undefined ? { row, event: e, lifeline } : { row, event: e, lifeline, inv },
    );
    this.rowSeq.push(seq);
    this.rowById.set(e.id, row);
    if (inv !== undefined) this.addToGroup(inv, e, row, lifeline);
    this.pair(e, row, lifeline, inv);
    this.markEvent(e, row, lifeline);
    const vs = this.pendingViolations.get(e.id);
    if (vs) this.placeViolations(e.id, row, vs);
  }

  private addToGroup(inv: string, e: TraceEvent, row: number, lifeline: string): void {
    let g = this.groupByInv.get(inv);
    if (!g) {
      g = {
        inv,
        kind: groupKindOf(e),
        pid: 'pid' in e ? e.pid : 0,
        mm: e.service === 'mm' ? e.instance : '',
        subscribers: [],
        lifelines: [],
        startRow: row,
        endRow: row,
        startTs: e.ts,
        endTs: e.ts,
        rows: [],
        complete: false,
        outstanding: 0,
        flagged: false,
      };
      this.groupByInv.set(inv, g);
      this.groups.push(g);
    }
    g.rows.push(row);
    g.endRow = row;
    g.endTs = e.ts;
    if (!g.lifelines.includes(lifeline)) g.lifelines.push(lifeline);
    if (g.mm === '' && e.service === 'mm') g.mm = e.instance;
    const sub = (s: string) => {
      if (!g.subscribers.includes(s)) g.subscribers.push(s);
    };
    // (if-chains, not switches: only a few of the event kinds matter here)
    if (e.kind === 'mn.range_start') {
      g.kind = 'range';
      g.reason = e.event;
      g.start = e.start;
      g.end = e.end;
      g.pid = e.pid;
    } else if (e.kind === 'mn.range_end') {
      g.kind = 'range';
      g.reason ??= e.event;
      g.start ??= e.start;
      g.end ??= e.end;
      this.rangeEnded.add(inv);
    } else if (e.kind === 'mn.page') {
      g.kind = 'page';
      g.start = e.addr;
      g.end = e.addr + PAGE_SIZE;
      g.pid = e.pid;
    } else if (e.kind === 'mn.release') {
      g.kind = 'release';
      g.pid = e.pid;
    } else if (e.kind === 'mn.send') {
      g.outstanding++;
      sub(e.subscriber);
    } else if (e.kind === 'mn.ack') {
      g.outstanding--;
      sub(e.subscriber);
    } else if (e.kind === 'mn.recv' || e.kind === 'mn.done') sub(e.agent);
    g.complete = (g.kind !== 'range' || this.rangeEnded.has(inv)) && g.outstanding <= 0;
  }

  private message(m: Message): void {
    const end = Math.max(m.fromRow, m.toRow);
    this.maxSpan = Math.max(this.maxSpan, end - Math.min(m.fromRow, m.toRow));
    const ms = this.messages;
    if (ms.length === 0 || Math.max(ms[ms.length - 1].fromRow, ms[ms.length - 1].toRow) <= end)
      ms.push(m);
    else {
      // drawn late (an earlier fault of a device page fault): keep the order by end row
      let i = ms.length;
      while (i > 0 && Math.max(ms[i - 1].fromRow, ms[i - 1].toRow) > end) i--;
      ms.splice(i, 0, m);
    }
    this.show(m.from);
    this.show(m.to);
  }

  private closeBar(b: Bar): void {
    this.closedBars.push(b);
    this.maxSpan = Math.max(this.maxSpan, (b.endRow ?? b.startRow) - b.startRow);
  }

  private show(lifeline: string): void {
    if (this.shownLifelines.has(lifeline)) return;
    this.shownLifelines.add(lifeline);
    this.lifelineList = null;
  }

  private pair(e: TraceEvent, row: number, lifeline: string, inv: string | undefined): void {
    const here: RowRef = { row, lifeline, id: e.id };
    if (e.service === 'mm' && e.op !== undefined) {
      this.opLastMmRow.set(e.op, here);
      trimMap(this.opLastMmRow);
    }
    if (e.kind === 'fault.begin') this.faultBegin(e, here);
    else if (e.kind === 'fault.end') this.faultEnd(e, here);
    else if (e.kind === 'npf.begin' || e.kind === 'kvm.fault.begin') {
      this.npfs.set(`${lifeline}|${e.pid}`, {
        ...here,
        what: e.kind === 'npf.begin' ? 'npf' : 'guest fault',
        addr: e.addr,
        pages: e.kind === 'npf.begin' ? e.pages : 1,
        sent: false,
        lastFaultEnd: null,
      });
      trimMap(this.npfs);
    } else if (e.kind === 'npf.end' || e.kind === 'kvm.fault.end') this.npfEnd(e, here);
    else if (e.kind === 'tlb.flush') this.shootdown(e, here, inv);
    else if (e.kind === 'mn.send') {
      this.lifelines.named(e.subscriber, 'subscriber');
      pushTo(this.sends, `${e.inv}|${e.subscriber}|${e.callback}`, {
        ...here,
        underLock: e.ptl !== null,
      });
      trimMap(this.sends);
    } else if (e.kind === 'mn.recv') this.mnRecv(e, here);
    else if (e.kind === 'mn.done') this.mnDone(e, here);
    else if (e.kind === 'mn.ack') this.mnAck(e, here);
    else if (e.kind === 'ptl.acquire') {
      this.ptls.set(`${e.pid}|${e.lock}|${e.token}`, {
        ...here,
        label: e.lock,
        ...(inv !== undefined ? { inv } : {}),
      });
      trimMap(this.ptls);
    } else if (e.kind === 'ptl.release') this.ptlRelease(e, here);
  }

  /** flush_tlb: from the op's latest row on mm (it holds the PT lock then) to the CPU's flush. */
  private shootdown(e: Ev<'tlb.flush'>, here: RowRef, inv: string | undefined): void {
    if (e.op === undefined) return;
    const src = this.opLastMmRow.get(e.op);
    if (!src) return;
    this.message({
      kind: 'shootdown',
      from: src.lifeline,
      to: here.lifeline,
      fromRow: src.row,
      toRow: here.row,
      label: 'flush_tlb',
      ...(inv !== undefined ? { inv } : {}),
      events: [src.id, e.id],
    });
  }

  private mnRecv(e: Ev<'mn.recv'>, here: RowRef): void {
    const key = `${e.inv}|${here.lifeline}|${e.callback}`;
    const s = shiftFrom(this.sends, key);
    if (s)
      this.message({
        kind: 'mn-call',
        from: s.lifeline,
        to: here.lifeline,
        fromRow: s.row,
        toRow: here.row,
        label: e.callback,
        inv: e.inv,
        ...(s.underLock ? { underLock: true } : {}),
        events: [s.id, e.id],
      });
    this.busy.set(key, { ...here, label: e.callback, inv: e.inv });
    trimMap(this.busy);
  }

  private mnDone(e: Ev<'mn.done'>, here: RowRef): void {
    const key = `${e.inv}|${here.lifeline}|${e.callback}`;
    const b = this.busy.get(key);
    if (b) {
      this.busy.delete(key);
      this.closeBar({
        kind: 'sleep',
        lifeline: here.lifeline,
        startRow: b.row,
        endRow: here.row,
        label: e.callback,
        inv: e.inv,
        events: [b.id, e.id],
      });
    }
    pushTo(this.dones, key, here);
    trimMap(this.dones);
  }

  private mnAck(e: Ev<'mn.ack'>, here: RowRef): void {
    const d = shiftFrom(this.dones, `${e.inv}|${e.subscriber}|${e.callback}`);
    if (d)
      this.message({
        kind: 'mn-ack',
        from: d.lifeline,
        to: here.lifeline,
        fromRow: d.row,
        toRow: here.row,
        label: `${e.callback} ack`,
        inv: e.inv,
        events: [d.id, e.id],
      });
  }

  private ptlRelease(e: Ev<'ptl.release'>, here: RowRef): void {
    const key = `${e.pid}|${e.lock}|${e.token}`;
    const a = this.ptls.get(key);
    if (!a) return;
    this.ptls.delete(key);
    this.closeBar({
      kind: 'ptl',
      lifeline: a.lifeline,
      startRow: a.row,
      endRow: here.row,
      label: e.released ? e.lock : `${e.lock} (lease lost)`,
      ...(a.inv !== undefined ? { inv: a.inv } : {}),
      events: [a.id, e.id],
    });
  }

  private faultBegin(e: Ev<'fault.begin'>, here: RowRef): void {
    const agent = e.agent;
    this.lifelines.named(agent, kindOfAgent(agent));
    if (e.op !== undefined) {
      this.faults.set(e.op, { row: here.row, lifeline: agent, id: e.id });
      trimMap(this.faults);
    }
    const npf = this.npfs.get(`${agent}|${e.pid}`);
    if (
      npf &&
      !npf.sent &&
      e.addr >= npf.addr &&
      e.addr < npf.addr + Math.max(1, npf.pages) * PAGE_SIZE
    ) {
      npf.sent = true;
      this.message({
        kind: 'npf',
        from: agent,
        to: here.lifeline,
        fromRow: npf.row,
        toRow: here.row,
        label: `${npf.what} ${e.access}`,
        events: [npf.id, e.id],
      });
      return;
    }
    this.message({
      kind: 'fault',
      from: agent,
      to: here.lifeline,
      fromRow: here.row,
      toRow: here.row,
      label: `fault ${e.access}`,
      events: [e.id],
    });
  }

  private faultEnd(e: Ev<'fault.end'>, here: RowRef): void {
    const agent = e.agent;
    const begin = e.op !== undefined ? this.faults.get(e.op) : undefined;
    if (e.op !== undefined) this.faults.delete(e.op);
    const npf = this.npfs.get(`${agent}|${e.pid}`);
    if (npf?.sent) {
      const prev = npf.lastFaultEnd;
      if (prev)
        this.message({
          kind: 'fault-reply',
          from: prev.mm,
          to: agent,
          fromRow: prev.row,
          toRow: prev.row,
          label: prev.result,
          events: [prev.id],
        });
      npf.lastFaultEnd = { ...here, mm: here.lifeline, result: e.result };
      return;
    }
    this.message({
      kind: 'fault-reply',
      from: here.lifeline,
      to: agent,
      fromRow: here.row,
      toRow: here.row,
      label: e.result === 'ok' ? (e.how ?? 'ok') : e.result,
      events: begin ? [begin.id, e.id] : [e.id],
    });
  }

  private npfEnd(e: Ev<'npf.end'> | Ev<'kvm.fault.end'>, here: RowRef): void {
    const key = `${here.lifeline}|${e.pid}`;
    const npf = this.npfs.get(key);
    if (!npf) return;
    this.npfs.delete(key);
    this.closeBar({
      kind: 'npf',
      lifeline: here.lifeline,
      startRow: npf.row,
      endRow: here.row,
      label: `${npf.what} ${e.result}`,
      events: [npf.id, e.id],
    });
    const f = npf.lastFaultEnd;
    if (f)
      this.message({
        kind: 'npf-reply',
        from: f.mm,
        to: here.lifeline,
        fromRow: f.row,
        toRow: here.row,
        label: e.result,
        events: [f.id, e.id],
      });
  }

  private markEvent(e: TraceEvent, row: number, lifeline: string): void {
    let kind: MarkerKind | null = null;
    if (e.kind === 'might_sleep' || e.kind === 'mn.ptl_held') kind = 'guard';
    else if ((e.kind === 'ptl.release' || e.kind === 'mmap_sem.release') && !e.released)
      kind = 'warning';
    else if (e.kind === 'access' && (e.frameFree || e.frameGen !== e.gen)) kind = 'warning';
    else if (
      e.kind === 'pte.reject' ||
      e.kind === 'access.refused' ||
      e.kind === 'mn.fenced' ||
      e.kind === 'cpu.offline' ||
      e.kind === 'mn.ack_ignored'
    )
      kind = 'warning';
    if (kind === null) return;
    this.markers = null;
    this.eventMarkers.push({
      kind,
      row,
      lifeline,
      eventId: e.id,
      title: e.kind,
      message: describeEvent(e),
    });
    this.flag(row);
  }

  private placeViolations(id: string, row: number, vs: ViolationInput[]): void {
    this.pendingViolations.delete(id);
    const lifeline = this.rows[row - this.firstRow]?.lifeline ?? '';
    this.markers = null;
    for (const v of vs)
      this.violationMarkers.push({
        kind: v.expected ? 'expected' : 'violation',
        row,
        lifeline,
        eventId: id,
        title: v.invariant,
        message: v.message,
      });
    // an expected violation is not a finding: it does not flag its invalidation
    if (vs.some((v) => !v.expected)) this.flag(row);
  }

  private flag(row: number): void {
    const inv = this.rows[row - this.firstRow]?.inv;
    if (inv === undefined) return;
    const g = this.groupByInv.get(inv);
    if (g) g.flagged = true;
  }
}

/** The model of a whole trace at once. */
export function buildDiagram(
  events: readonly TraceEvent[],
  opts: BuilderOptions = {},
): DiagramModel {
  const b = new DiagramBuilder({ ...opts, cap: opts.cap ?? Math.max(10, events.length) });
  b.push(events);
  return b.model();
}
