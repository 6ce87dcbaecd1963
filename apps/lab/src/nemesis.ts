/**
 * The lab's nemesis (Jepsen's, on an mmlab lab): opens fault windows on targets and heals
 * them. Two kinds of fault, done two ways:
 *
 *   callback faults (latency, hang, drop-ack, dup-ack, late-ack, crash) are asked of a
 *   subscriber over NATS (`subChaos`: the whole list of its active faults each time), so they
 *   work on any running lab, compose included;
 *   process faults (pause, kill, restart) are done to a process of a lab this process started
 *   (LocalLab: `mmlab run --local`, `mmlab up`): SIGSTOP/SIGCONT, SIGKILL and a fresh start —
 *   of a service instance or of the nats-server or redis-server itself.
 *
 * Every window is a `chaos.start` → `chaos.end` pair of trace events (the run report shades
 * them; results.json lists them). A window heals at a `heal` naming its target (or any), after
 * its own `ms`, or in the final heal phase every run ends with, so that the last checks never
 * see a process stopped or dead.
 *
 * Windows on one target: at most one process fault at a time (a paused process cannot also be
 * killed meaningfully); callback faults stack (latency on starts + drop-ack), one per kind.
 */
import { MmlabError, type SubFault, SubFaultKind } from '@mmlab/protocol';
import { type RpcClient, Tracer, now } from '@mmlab/runtime';
import { type ChaosSpec, PROCESS_FAULTS } from '@mmlab/scenario';
import type { LocalLab } from '@mmlab/runner';

export interface FaultWindow {
  /** 1, 2, ... in the order the faults were opened */
  id: number;
  /** the target as named (`mm` included) */
  target: string;
  /** the process or subscriber it hit (`mm` resolved to the replica, e.g. mm-1) */
  instance: string;
  fault: ChaosSpec['fault'];
  spec: ChaosSpec;
  label: string;
  /** epoch ms */
  startedAt: number;
  /** epoch ms; null while open */
  endedAt: number | null;
  /** the fault could not be healed cleanly (the window is closed regardless) */
  healError?: string;
}

interface Open {
  w: FaultWindow;
  timer?: NodeJS.Timeout;
  healing?: Promise<void>;
}

const isProcessFault = (f: ChaosSpec['fault']): f is (typeof PROCESS_FAULTS)[number] =>
  (PROCESS_FAULTS as readonly string[]).includes(f);

const errorText = (e: unknown): string => (e instanceof Error ? e.message : String(e));

export class Nemesis {
  private readonly open = new Map<number, Open>();
  private readonly all: FaultWindow[] = [];
  private readonly tracer: Tracer;
  private nextId = 1;

  constructor(
    private readonly lab: LocalLab | null,
    private readonly rpc: RpcClient,
    private readonly opts: { log?: (line: string) => void; timeoutMs?: number } = {},
  ) {
    this.tracer = new Tracer(rpc.nc, 'lab', 'nemesis');
  }

  /** Publish the chaos.* events emitted so far (before a run's barrier). */
  flush(): Promise<void> {
    return this.tracer.flush();
  }

  /** Every window so far, open ones with endedAt null. */
  windows(): FaultWindow[] {
    return this.all.map((w) => ({ ...w }));
  }

  active(): FaultWindow[] {
    return [...this.open.values()].map((o) => ({ ...o.w }));
  }

  /** Open a fault window; with spec.ms it heals by itself after that long. */
  async inject(spec: ChaosSpec): Promise<FaultWindow> {
    // a process fault this nemesis cannot do (no local lab, no such process) is refused before
    // anything is asked or recorded: no meminfo (which drains mm's page batch), no window, no
    // chaos.start (fuzz-http: POST /chaos {"target":"cpu0","fault":"pause"} to `mmlab api` was
    // a 422 that left a closed window and two trace events behind; {"target":"mm", ...} made
    // the mm drain its page batch first)
    if (isProcessFault(spec.fault) && !this.lab) this.local(spec.target);
    const instance = await this.resolve(spec);
    if (isProcessFault(spec.fault)) this.local(instance);
    for (const o of this.open.values()) {
      if (o.w.instance !== instance || o.healing) continue;
      if (isProcessFault(spec.fault) && isProcessFault(o.w.fault))
        throw new MmlabError('EINVAL', `${instance} is already under ${o.w.fault}: heal it first`);
      if (o.w.fault === spec.fault)
        throw new MmlabError(
          'EINVAL',
          `${instance} already has a ${spec.fault} fault: heal it first`,
        );
    }
    const label =
      `${spec.fault} ${spec.target}${spec.target !== instance ? ` (${instance})` : ''}` +
      (spec.distribution !== undefined ? ` ${String(spec.distribution)} ms` : '') +
      (spec.callbacks ? ` on ${spec.callbacks.join(',')}` : '') +
      (spec.ms ? ` for ${spec.ms} ms` : '');
    const w: FaultWindow = {
      id: this.nextId++,
      target: spec.target,
      instance,
      fault: spec.fault,
      spec,
      label,
      startedAt: now(),
      endedAt: null,
    };
    this.tracer.emit({ kind: 'chaos.start', target: instance, fault: spec.fault, label });
    await this.tracer.flush();
    const o: Open = { w };
    this.open.set(w.id, o);
    this.all.push(w);
    try {
      if (isProcessFault(spec.fault)) await this.processFault(instance, spec.fault);
      else await this.pushSubFaults(instance);
    } catch (e) {
      this.open.delete(w.id);
      w.endedAt = now();
      w.healError = `not injected: ${errorText(e)}`;
      this.tracer.emit({ kind: 'chaos.end', target: instance, fault: spec.fault });
      throw e;
    }
    this.opts.log?.(`nemesis: ${label}`);
    if (spec.fault === 'restart') {
      // a kill and a fresh start: the window was the time it was away
      this.close(o);
      return { ...w };
    }
    if (spec.ms) o.timer = setTimeout(() => void this.healOne(o).catch(() => {}), spec.ms);
    return { ...w };
  }

  /** Heal the open windows of target (as named or resolved), or all; how many were healed. */
  async heal(target?: string): Promise<number> {
    const which = [...this.open.values()].filter(
      (o) => target === undefined || o.w.target === target || o.w.instance === target,
    );
    // process faults last: a paused subscriber must run again before it can be told anything
    which.sort((a, b) => Number(isProcessFault(a.w.fault)) - Number(isProcessFault(b.w.fault)));
    let healed = 0;
    for (const o of which) {
      if (!o.healing) healed++;
      await this.healOne(o);
    }
    return healed;
  }

  /** Heal one window by id (a schedule heals its own windows only). */
  async healWindow(id: number): Promise<void> {
    const o = this.open.get(id);
    if (o) await this.healOne(o);
  }

  private healOne(o: Open): Promise<void> {
    if (o.healing) return o.healing;
    if (o.timer) clearTimeout(o.timer);
    o.healing = (async () => {
      const { instance, fault } = o.w;
      try {
        if (fault === 'pause') this.local(instance).signal(instance, 'SIGCONT');
        else if (fault === 'kill') await this.local(instance).restart(instance);
        else {
          this.open.delete(o.w.id); // out of the list pushed next
          if (fault === 'crash' && this.lab && this.isDead(instance))
            await this.lab.restart(instance);
          else await this.pushSubFaults(instance);
        }
      } catch (e) {
        o.w.healError = errorText(e);
        this.opts.log?.(`nemesis: healing ${o.w.label} failed: ${o.w.healError}`);
      } finally {
        this.close(o);
      }
    })();
    return o.healing;
  }

  private close(o: Open): void {
    this.open.delete(o.w.id);
    o.w.endedAt = now();
    this.tracer.emit({ kind: 'chaos.end', target: o.w.instance, fault: o.w.fault });
    this.opts.log?.(`nemesis: healed ${o.w.label}`);
  }

  /** Tell a subscriber the whole list of its open callback faults. */
  private async pushSubFaults(instance: string): Promise<void> {
    const faults: SubFault[] = [...this.open.values()]
      .filter((o) => o.w.instance === instance && !isProcessFault(o.w.fault))
      .map(({ w: { spec } }) => ({
        fault: SubFaultKind.parse(spec.fault),
        ...(spec.distribution !== undefined && { distribution: spec.distribution }),
        ...(spec.jitterMs !== undefined && { jitterMs: spec.jitterMs }),
        ...(spec.callbacks && { callbacks: spec.callbacks }),
      }));
    await this.rpc.call(
      'subChaos',
      { faults },
      { id: instance, timeoutMs: this.opts.timeoutMs ?? 5000 },
    );
  }

  private async processFault(instance: string, fault: 'pause' | 'kill' | 'restart'): Promise<void> {
    const lab = this.local(instance);
    switch (fault) {
      case 'pause':
        lab.signal(instance, 'SIGSTOP');
        return;
      case 'kill':
        await lab.kill(instance);
        return;
      case 'restart':
        await lab.restart(instance);
        return;
    }
  }

  private isDead(instance: string): boolean {
    const p = this.lab?.proc(instance);
    return !!p && (p.exitCode !== null || p.signalCode !== null);
  }

  private local(target: string): LocalLab {
    if (!this.lab)
      throw new MmlabError(
        'EINVAL',
        `pause, kill and restart of ${target} need a lab this process started (mmlab run --local, mmlab up); on compose use docker compose pause/kill/restart`,
      );
    if (!this.lab.targets.includes(target))
      throw new MmlabError(
        'EINVAL',
        `no process ${target} in this lab (it runs: ${this.lab.targets.join(', ')})`,
      );
    return this.lab;
  }

  /**
   * The instance a spec hits: `mm` is the replica that holds a PT lock right now (the
   * interesting one to kill), else the first replica that answers.
   */
  private async resolve(spec: ChaosSpec): Promise<string> {
    if (spec.target !== 'mm') return spec.target;
    const timeoutMs = this.opts.timeoutMs ?? 5000;
    try {
      const mem = await this.rpc.call('meminfo', {}, { timeoutMs });
      // owners are "<incarnation>/<op>", the incarnation "<instance>.<boot id>" (mm-1.3f2a.../fault#7)
      for (const l of mem.locks) {
        const m = /^(mm-\d+)[./]/.exec(l.owner);
        if (m) return m[1];
      }
    } catch {
      // no lock information: fall back to the first replica
    }
    const pongs = await this.rpc.gather('ping', {}, { timeoutMs: 500 });
    const mms = pongs
      .filter((p) => p.service === 'mm')
      .map((p) => p.instance)
      .sort();
    if (mms.length === 0) throw new MmlabError('ESRCH', 'no mm replica answers ping');
    return mms[0];
  }
}
