/**
 * The sequence-diagram model of a trace: lifelines (columns), rows (one per shown event, in
 * timestamp order), messages (arrows between lifelines), bars (activations on one lifeline),
 * invalidation groups and markers. Plain data, no DOM: the live dashboard draws it with
 * React, renderSequenceSvg() draws it as a standalone SVG.
 *
 * Rows are numbered from 0 for the first event ever pushed; when the builder's bounded buffer
 * drops old events, `firstRow` moves on and items that started earlier are clipped at it.
 */
import type { TraceEvent } from '@mmlab/protocol';

export type LifelineKind = 'mm' | 'cpu' | 'subscriber' | 'other' | 'observer';

export interface Lifeline {
  /** the service instance: mm-0, cpu1, hca0, ... */
  id: string;
  kind: LifelineKind;
  /** the service that emitted its events ('' when only seen as an agent or a subscriber) */
  service: string;
}

export interface DiagramRow {
  row: number;
  event: TraceEvent;
  /** the lifeline the event is drawn on: the instance that emitted it */
  lifeline: string;
  /** the invalidation group the event belongs to, if any */
  inv?: string;
}

export type MessageKind =
  /** a CPU (or any agent) traps to mm: fault.begin */
  | 'fault'
  /** mm answers the fault: fault.end */
  | 'fault-reply'
  /**
   * a device page fault reaches mm: npf.begin on the device (or kvm.fault.begin on a KVM),
   * fault.begin on mm
   */
  | 'npf'
  /** mm resolves it: the last fault.end, and npf.end on the device */
  | 'npf-reply'
  /** TLB shootdown: mm (holding the PT lock) to the CPU's tlb.flush */
  | 'shootdown'
  /** a notifier callback request: mn.send on mm, mn.recv on the subscriber */
  | 'mn-call'
  /** its ack: mn.done on the subscriber, mn.ack on mm */
  | 'mn-ack';

export interface Message {
  kind: MessageKind;
  from: string;
  to: string;
  fromRow: number;
  toRow: number;
  label: string;
  /** the invalidation it belongs to (notifier messages, and shootdowns inside a range) */
  inv?: string;
  /** sent while the sender held a PT lock (mn.send with ptl): a callback that may sleep */
  underLock?: boolean;
  /** ids of the events it is drawn from */
  events: string[];
}

export type BarKind =
  /** a PT lock held by an mm operation: ptl.acquire → ptl.release */
  | 'ptl'
  /** a subscriber busy in (and possibly sleeping through) a callback: mn.recv → mn.done */
  | 'sleep'
  /** a device page fault in progress: npf.begin → npf.end, or kvm.fault.begin → kvm.fault.end */
  | 'npf';

export interface Bar {
  kind: BarKind;
  lifeline: string;
  startRow: number;
  /** null while still open (drawn to the last row) */
  endRow: number | null;
  label: string;
  inv?: string;
  events: string[];
}

export type GroupKind = 'range' | 'page' | 'release' | 'callback';

export interface InvGroup {
  inv: string;
  kind: GroupKind;
  pid: number;
  /** the mm instance that dispatched it */
  mm: string;
  /** the notifier event reason (range groups) */
  reason?: string;
  /** the invalidated range [start, end) (range groups; a page group: its page) */
  start?: number;
  end?: number;
  subscribers: string[];
  /** lifelines with at least one event of the group, in the order they were first seen */
  lifelines: string[];
  startRow: number;
  endRow: number;
  startTs: number;
  endTs: number;
  /** rows of its events, ascending */
  rows: number[];
  /** range_end seen (range groups) and every callback sent was acked */
  complete: boolean;
  /** callbacks sent and not yet acked */
  outstanding: number;
  /** a violation or a guard is marked on one of its events */
  flagged: boolean;
}

export type MarkerKind =
  /** an invariant violation reported by the checker */
  | 'violation'
  /** a violation the running scenario expects (a fault-injection run): not a finding */
  | 'expected'
  /** a guard fired in the trace itself: might_sleep, mn.ptl_held */
  | 'guard'
  /** something went wrong without breaking an invariant: a lost lease, a refused write */
  | 'warning';

export interface Marker {
  kind: MarkerKind;
  row: number;
  lifeline: string;
  eventId: string;
  /** invariant name (violations), or the event kind */
  title: string;
  message: string;
}

/** A checker verdict's violation, as GET /invariants serves it (only the event ids matter). */
export interface ViolationInput {
  invariant: string;
  message: string;
  events: ReadonlyArray<{ id: string }>;
  /** the scenario running when it happened expects this invariant to break (expectedViolations) */
  expected?: boolean;
}

export interface DiagramFilter {
  /** only these processes (events of their operations included) */
  pids?: readonly number[];
  /** only events touching [start, end) (and the operations/invalidations that did) */
  addr?: { start: number; end: number };
  /** only these subscribers (other subscribers' lifelines and callbacks hidden) */
  subscribers?: readonly string[];
  /** only invalidation groups whose inv contains this text */
  inv?: string;
  /** hide the observer's own lifeline (default true) */
  hideObserver?: boolean;
}

export interface DiagramModel {
  /** ordered: mm replicas, CPUs, subscribers, others, observer */
  lifelines: Lifeline[];
  /** number of the first row kept */
  firstRow: number;
  /** rows[i].row === firstRow + i */
  rows: DiagramRow[];
  messages: Message[];
  /** closed bars, by end row */
  bars: Bar[];
  /** bars still open (endRow null): drawn to the last row */
  openBars: Bar[];
  /** by first row */
  groups: InvGroup[];
  /** by row */
  markers: Marker[];
  /** the most rows a message or a closed bar spans (for windowed queries) */
  maxSpan: number;
  counts: {
    /** events in the builder's buffer (shown or filtered out) */
    buffered: number;
    /** rows */
    shown: number;
    /** events dropped from the buffer (oldest first) since it was created or cleared */
    evicted: number;
  };
  /** bumped at every change; a rebuild (late event, new filter) renumbers rows from 0 */
  version: number;
}
