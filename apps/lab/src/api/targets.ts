/**
 * What the lab API can aim a fault at. With a lab this process started (`mmlab up`): its
 * processes (LocalLab.targets, and `mm` for "the replica holding a PT lock") and its configured
 * subscribers, with their pids. Without one (`mmlab api` against compose or scripts/lab.sh):
 * the instances answering `ping`; subscribers are the hca (and kvm) instances among them, and
 * only callback faults can be done.
 */
import type { RpcClient } from '@mmlab/runtime';
import { type ChaosSpec, PROCESS_FAULTS, faultTargetProblem } from '@mmlab/scenario';
import type { LocalLab } from '@mmlab/runner';

export interface TargetList {
  /** true: a lab this process started (process faults work) */
  local: boolean;
  /** every name a fault may be aimed at */
  targets: string[];
  /** the notifier subscribers among them (callback faults) */
  subscribers: string[];
  /** process faults: local labs only (empty otherwise) */
  processes: string[];
  /** pid of each process target of a local lab */
  pids: Record<string, number>;
}

/** Services whose instances are notifier subscribers. */
const SUBSCRIBER_SERVICES = new Set(['hca', 'kvm', 'dev']);

const isProcessFault = (f: ChaosSpec['fault']): boolean =>
  (PROCESS_FAULTS as readonly string[]).includes(f);

export class LabTargets {
  constructor(
    private readonly lab: LocalLab | null,
    private readonly rpc: RpcClient,
    private readonly pingMs = 500,
  ) {}

  async list(): Promise<TargetList> {
    const lab = this.lab;
    if (lab) {
      const processes = ['mm', ...lab.targets.filter((t) => t !== 'mm')];
      const pids: Record<string, number> = {};
      for (const t of lab.targets) {
        const pid = this.pidOf(lab, t);
        if (pid !== undefined) pids[t] = pid;
      }
      const subscribers = (lab.cfg.subscribers ?? []).map((s) => s.name);
      return { local: true, targets: processes, subscribers, processes, pids };
    }
    const pongs = await this.rpc.gather('ping', {}, { timeoutMs: this.pingMs });
    const instances = [...new Set(pongs.map((p) => p.instance))].sort();
    const subscribers = [
      ...new Set(pongs.filter((p) => SUBSCRIBER_SERVICES.has(p.service)).map((p) => p.instance)),
    ].sort();
    const mm = pongs.some((p) => p.service === 'mm') ? ['mm'] : [];
    return { local: false, targets: [...mm, ...instances], subscribers, processes: [], pids: {} };
  }

  /**
   * Why spec's target cannot take its fault in this lab (an unknown name, a callback fault on
   * a process that is no subscriber), or undefined. A process fault without a local lab is
   * left to the nemesis, whose refusal says what to use instead.
   */
  async problem(spec: ChaosSpec): Promise<string | undefined> {
    const lab = this.lab;
    if (lab) {
      if (!isProcessFault(spec.fault))
        return faultTargetProblem(spec.target, spec.fault, {
          cpus: lab.cfg.cpus,
          mmReplicas: lab.cfg.mmReplicas,
          subscribers: lab.cfg.subscribers ?? [],
        });
      const processes = ['mm', ...lab.targets];
      return processes.includes(spec.target)
        ? undefined
        : `no process "${spec.target}" in this lab (it runs: ${processes.join(', ')})`;
    }
    if (isProcessFault(spec.fault)) return undefined;
    const { subscribers } = await this.list();
    return subscribers.includes(spec.target)
      ? undefined
      : `${spec.fault} is a subscriber's callback fault: "${spec.target}" is not a subscriber answering ping (answering: ${subscribers.join(', ') || 'none'})`;
  }

  private pidOf(lab: LocalLab, target: string): number | undefined {
    if (target === 'nats' || target === 'redis') return lab.server(target)?.proc.pid;
    try {
      return lab.proc(target).pid;
    } catch {
      return undefined;
    }
  }
}
