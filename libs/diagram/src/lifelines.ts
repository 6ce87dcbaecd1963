/** Lifelines: one per service instance, in a fixed order (mm replicas, CPUs, subscribers, others, observer). */
import type { Lifeline, LifelineKind } from './types';

const KIND_RANK: Record<LifelineKind, number> = {
  mm: 0,
  cpu: 1,
  subscriber: 2,
  other: 3,
  observer: 4,
};

export function kindOfService(service: string): LifelineKind {
  switch (service) {
    case 'mm':
      return 'mm';
    case 'cpu':
      return 'cpu';
    case 'hca':
    case 'kvm':
    case 'dev':
      return 'subscriber';
    case 'observer':
      return 'observer';
    default:
      return 'other';
  }
}

/** An instance known only as an agent (fault.begin's agent, tlb.fill's agent): cpuN or a device. */
export const kindOfAgent = (agent: string): LifelineKind =>
  /^cpu\d+$/.test(agent) ? 'cpu' : 'subscriber';

/** Natural order: cpu2 before cpu10, mm-1 before mm-2. */
export function naturalCompare(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

export function compareLifelines(a: Lifeline, b: Lifeline): number {
  return KIND_RANK[a.kind] - KIND_RANK[b.kind] || naturalCompare(a.id, b.id);
}

/**
 * The set of lifelines of a diagram. An instance first seen as an agent is upgraded when it
 * publishes an event of its own (its service then decides its kind).
 */
export class LifelineSet {
  private readonly byId = new Map<string, Lifeline>();
  private sorted: Lifeline[] | null = [];

  /** The instance emitted an event as `service`. */
  emitter(id: string, service: string): void {
    const l = this.byId.get(id);
    if (l && l.service !== '') return;
    this.byId.set(id, { id, service, kind: kindOfService(service) });
    this.sorted = null;
  }

  /** The instance is named by another's event (an agent, a subscriber). */
  named(id: string, kind: LifelineKind): void {
    if (this.byId.has(id)) return;
    this.byId.set(id, { id, service: '', kind });
    this.sorted = null;
  }

  has(id: string): boolean {
    return this.byId.has(id);
  }

  get(id: string): Lifeline | undefined {
    return this.byId.get(id);
  }

  list(hideObserver: boolean): Lifeline[] {
    this.sorted ??= [...this.byId.values()].sort(compareLifelines);
    return hideObserver ? this.sorted.filter((l) => l.kind !== 'observer') : this.sorted;
  }

  clear(): void {
    this.byId.clear();
    this.sorted = [];
  }
}
