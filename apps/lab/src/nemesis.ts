/**
 * The lab's nemesis, process level (Jepsen's kill/pause, on a local lab): faults on one service
 * instance, each a recorded window (chaos.start → chaos.end trace events, which the run report
 * shades), healed by a `heal` step, by its own timer, or at the end of the run — a final heal
 * phase before the last checks, so a run never ends with a process stopped or dead.
 */
import { MmlabError } from '@mmlab/protocol';
import { Tracer } from '@mmlab/runtime';
import type { LocalLab } from '@mmlab/testing';
import type { NatsConnection } from 'nats';

type Fault = 'pause' | 'kill' | 'restart';

interface Active {
  fault: Fault;
  timer?: NodeJS.Timeout;
  healing?: Promise<void>;
}

export class Nemesis {
  private readonly active = new Map<string, Active>();
  private readonly tracer: Tracer;

  constructor(
    private readonly lab: LocalLab | null,
    nc: NatsConnection,
  ) {
    this.tracer = new Tracer(nc, 'lab', 'nemesis');
  }

  private local(target: string): LocalLab {
    if (!this.lab)
      throw new MmlabError('EINVAL', `chaos on ${target} needs a lab this run started (--local)`);
    if (!this.lab.instances.includes(target))
      throw new MmlabError('EINVAL', `no instance ${target} in this lab`);
    return this.lab;
  }

  /** Open a fault window on target; with ms it heals by itself. */
  async inject(target: string, fault: Fault, ms?: number): Promise<void> {
    const lab = this.local(target);
    if (this.active.has(target))
      throw new MmlabError(
        'EINVAL',
        `${target} is already under ${this.active.get(target)!.fault}`,
      );
    this.tracer.emit({
      kind: 'chaos.start',
      target,
      fault,
      label: `${fault} ${target}${ms ? ` for ${ms} ms` : ''}`,
    });
    await this.tracer.flush();
    switch (fault) {
      case 'pause':
        lab.signal(target, 'SIGSTOP');
        break;
      case 'kill':
        await lab.kill(target);
        break;
      case 'restart':
        // a kill and a fresh start: the window is the time it was away
        await lab.restart(target);
        this.tracer.emit({ kind: 'chaos.end', target, fault });
        return;
    }
    const a: Active = { fault };
    if (ms) a.timer = setTimeout(() => void this.heal(target), ms);
    this.active.set(target, a);
  }

  /** Heal target (or every fault): SIGCONT a paused process, start a killed one again. */
  async heal(target?: string): Promise<number> {
    const targets = target ? [target] : [...this.active.keys()];
    let healed = 0;
    for (const t of targets) {
      const a = this.active.get(t);
      if (!a) continue;
      if (!a.healing) {
        if (a.timer) clearTimeout(a.timer);
        a.healing = (async () => {
          const lab = this.local(t);
          if (a.fault === 'pause') lab.signal(t, 'SIGCONT');
          else await lab.restart(t);
          this.tracer.emit({ kind: 'chaos.end', target: t, fault: a.fault });
          this.active.delete(t);
        })();
        healed++;
      }
      await a.healing;
    }
    return healed;
  }
}
