/**
 * The labs the quick variants share (the test suite's test/bench-quick.e2e-spec.ts and
 * `npm run bench -- --quick`): one lab per mode, started the first time a benchmark asks for
 * it and kept for the next ones, so eight benchmarks start two labs instead of twelve. The full
 * variants do not use it: each starts the lab its figure was designed on (harness `withLab`).
 *
 * A lab here is a superset of what the quick variants need (enough frames, CPUs, replicas and
 * HCAs for any of them). What differs between benchmarks on the same mode is the notifier
 * dispatch (MMLAB_DISPATCH, read by mm): a benchmark that names one gets the mm replicas
 * restarted with it when the lab runs the other; one that names none runs on whichever the lab
 * has (with at most one subscriber on a process the two are the same walk). A benchmark may stop
 * mm replicas (fault-throughput goes from 2 to 1): the next one that needs more (or the trace
 * barrier) gets them started again.
 *
 * Each benchmark leaves its processes behind (they are small); every lab ends with mmlab fsck
 * clean when stop() tears it down (startTestLab's stop), which the quick suite asserts.
 */
import type { Dispatch, Mode } from '@mmlab/protocol';
import { type LabConfig, stopProcess } from '@mmlab/runner';
import { type TestLab, startTestLab } from '@mmlab/testing';

/** What a quick variant needs of its lab (at least: the shared lab may have more). */
export interface LabNeed {
  mode: Mode;
  /** the notifier dispatch it measures; absent: any (it registers one subscriber at most) */
  dispatch?: Dispatch;
  /** the TraceLog subscribed to every trace event while it runs (default: off, it costs) */
  trace?: boolean;
  frames?: number;
  memlockPages?: number;
  cpus?: number;
  mmReplicas?: number;
  /** HCAs hca0, hca1, ... */
  hcas?: number;
  observer?: boolean;
  /** the PT-lock soft-lockup threshold it needs at least (its device sleeps that long) */
  softlockupMs?: number;
}

/** The shared labs' configurations: every quick variant's need fits one of them. */
export const QUICK_LABS: Record<Mode, LabConfig> = {
  patched: {
    mode: 'patched',
    frames: 4096,
    memlockPages: 2048,
    cpus: 2,
    mmReplicas: 2,
    softlockupMs: 60_000,
    observer: true,
    subscribers: [
      { name: 'hca0', kind: 'hca', invalidateLatencyMs: 0 },
      { name: 'hca1', kind: 'hca', invalidateLatencyMs: 0 },
    ],
  },
  legacy: {
    mode: 'legacy',
    frames: 4096,
    cpus: 1,
    mmReplicas: 1,
    softlockupMs: 60_000,
    observer: false,
    subscribers: [{ name: 'hca0', kind: 'hca', invalidateLatencyMs: 0 }],
  },
};

/** Why cfg cannot serve need (null: it can). */
export function unmet(cfg: LabConfig, need: LabNeed): string | null {
  const hcas = cfg.subscribers?.length ?? 0;
  const short: string[] = [];
  if (cfg.mode !== need.mode) short.push(`mode ${need.mode}`);
  if (need.frames !== undefined && cfg.frames < need.frames) short.push(`${need.frames} frames`);
  if (need.memlockPages !== undefined && (cfg.memlockPages ?? 0) < need.memlockPages)
    short.push(`memlock ${need.memlockPages} pages`);
  if (need.cpus !== undefined && cfg.cpus < need.cpus) short.push(`${need.cpus} CPUs`);
  if (need.mmReplicas !== undefined && cfg.mmReplicas < need.mmReplicas)
    short.push(`${need.mmReplicas} mm replicas`);
  if (need.hcas !== undefined && hcas < need.hcas) short.push(`${need.hcas} HCAs`);
  if (need.observer && cfg.observer === false) short.push('the observer');
  if (need.softlockupMs !== undefined && (cfg.softlockupMs ?? 0) < need.softlockupMs)
    short.push(`softlockup ≥ ${need.softlockupMs} ms`);
  return short.length ? short.join(', ') : null;
}

export class SharedLabs {
  private readonly labs = new Map<Mode, Promise<TestLab>>();
  private busy = false;

  constructor(private readonly configs: Record<Mode, LabConfig> = QUICK_LABS) {}

  /**
   * Run fn on the shared lab of need.mode (started on first use, mm replicas restarted with the
   * dispatch it names, stopped ones started again); the lab stays up for the next benchmark.
   */
  async use<T>(need: LabNeed, fn: (env: TestLab) => Promise<T>): Promise<T> {
    const cfg = this.configs[need.mode];
    const why = unmet(cfg, need);
    if (why) throw new Error(`the shared ${need.mode} lab has not got ${why}`);
    if (this.busy) throw new Error('the shared labs run one benchmark at a time');
    this.busy = true;
    try {
      let started = this.labs.get(need.mode);
      if (!started) {
        started = startTestLab(cfg, { trace: false, rpcTimeoutMs: 60_000 });
        this.labs.set(need.mode, started);
      }
      const env = await started;
      await this.prepare(env, need);
      if (need.trace) env.trace.start();
      try {
        return await fn(env);
      } finally {
        if (need.trace) env.trace.stop();
      }
    } finally {
      this.busy = false;
    }
  }

  /**
   * The mm replicas with the dispatch need names (all restarted to change it), and as many
   * running as it needs (stopped ones started again).
   */
  private async prepare(env: TestLab, need: LabNeed): Promise<void> {
    const { lab } = env;
    const mms = lab.specs.filter((s) => s.app === 'mm').map((s) => s.instance);
    const running = (i: string) => {
      const p = lab.proc(i);
      return p.exitCode === null && p.signalCode === null;
    };
    const dispatch = (i: string) =>
      lab.specs.find((s) => s.instance === i)!.env.MMLAB_DISPATCH ?? 'parallel';
    if (need.dispatch && mms.some((i) => dispatch(i) !== need.dispatch)) {
      // replicas of one lab never run two dispatches at once: stop them all, then start them
      await Promise.all(mms.filter(running).map((i) => stopProcess(lab.proc(i))));
      await Promise.all(mms.map((i) => lab.restart(i, { MMLAB_DISPATCH: need.dispatch! })));
    } else if (
      (need.mmReplicas ?? 0) > mms.filter(running).length ||
      // the trace barrier (settled) waits for every instance's flush reply
      (need.trace && !mms.every(running))
    )
      await Promise.all(mms.filter((i) => !running(i)).map((i) => lab.start(i)));
  }

  /** Tear every lab down; throws the first failure (an fsck finding, say) after all are down. */
  async stop(): Promise<void> {
    const labs = [...this.labs.values()];
    this.labs.clear();
    const results = await Promise.allSettled(labs.map(async (p) => (await p).stop()));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }
}
