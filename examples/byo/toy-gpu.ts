/**
 * A toy GPU-style device on the mmlab SDK (libs/subscriber Device): a page-table cache (the
 * SDK's DeviceCache: virtual page → frame, traced) and a TLB flush that takes time — the
 * "invalidate" command posted to the GPU completes after --flush-ms (default
 * MMLAB_INVALIDATE_LATENCY, else 20 ms). The SDK does the rest: the envelope of every callback,
 * resends, the liveness lease, the fence, the fault path (gup with read_begin/read_retry) and
 * the traces.
 *
 * The one rule: a callback returns (acks) only once the GPU no longer uses a translation of the
 * range — flush completed. toy-gpu-buggy.ts breaks it.
 *
 * Run (after `npm run build`), with the credentials `mmlab up --byo gpu0` wrote:
 *   node dist/examples/byo/toy-gpu.js --creds <file> [--flush-ms 20]
 *
 * Models: a GPU driver's mmu_notifier_ops (v3.7 names), e.g. a GPU MMU whose page-table cache
 * is shot down by a command the driver waits for (nouveau's / amdgpu's later HMM mirrors).
 */
import type { ReqParsed } from '@mmlab/protocol';
import { sleep } from '@mmlab/runtime';
import { Device, type DeviceCallbackCtx, runDevice } from '@mmlab/subscriber';

/** --flush-ms N, else MMLAB_INVALIDATE_LATENCY when it is a number, else 20. */
export function flushMsOf(argv: readonly string[], env: NodeJS.ProcessEnv): number {
  const i = argv.indexOf('--flush-ms');
  const given = i >= 0 ? argv[i + 1] : env.MMLAB_INVALIDATE_LATENCY;
  const ms = Number(given);
  return given !== undefined && Number.isFinite(ms) && ms >= 0 ? ms : 20;
}

export class ToyGpu extends Device {
  constructor(readonly flushMs: number) {
    super();
  }

  /** Post the TLB-invalidate command for [start, end) and wait for its completion. */
  protected async flush(pid: number, start: number, end: number, op: string): Promise<void> {
    await sleep(this.flushMs);
    this.cache.zap(pid, start, end, op);
  }

  /** Stop using [start, end): flushed before the ack. */
  readonly invalidateRangeStart = async (
    req: ReqParsed<'mnInvalidateRangeStart'>,
    { op }: DeviceCallbackCtx,
  ): Promise<void> => {
    await this.flush(req.pid, req.start, req.end, op);
  };

  /** Nothing to do: the SDK lowers the count and bumps the sequence (faults may map again). */
  readonly invalidateRangeEnd = async (
    _req: ReqParsed<'mnInvalidateRangeEnd'>,
    _cb: DeviceCallbackCtx,
  ): Promise<void> => {};

  /** One page: the same flush. */
  readonly invalidatePage = async (
    req: ReqParsed<'mnInvalidatePage'>,
    { op }: DeviceCallbackCtx,
  ): Promise<void> => {
    await this.flush(req.pid, req.addr, req.addr + 4096, op);
  };

  /** The address space goes away: flush everything of pid. */
  readonly release = async (
    req: ReqParsed<'mnRelease'>,
    { op }: DeviceCallbackCtx,
  ): Promise<void> => {
    await this.flush(req.pid, 0, 2 ** 47, op);
  };

  /** Under the PT lock in v3.7: no sleeping — drop the entry at once (refault later). */
  override readonly changePte = async (
    req: ReqParsed<'mnChangePte'>,
    { op }: DeviceCallbackCtx,
  ): Promise<void> => {
    this.cache.zap(req.pid, req.addr, req.addr + 4096, op);
    return Promise.resolve();
  };

  /** The GPU's accessed bits, as the cache keeps them (no sleeping either). */
  override readonly clearFlushYoung = (req: ReqParsed<'mnClearFlushYoung'>): Promise<boolean> =>
    Promise.resolve(this.cache.young(req.pid, req.start, req.end, true));

  override readonly testYoung = (req: ReqParsed<'mnTestYoung'>): Promise<boolean> =>
    Promise.resolve(this.cache.young(req.pid, req.addr, req.addr + 4096, false));
}

if (require.main === module) runDevice(new ToyGpu(flushMsOf(process.argv, process.env)));
