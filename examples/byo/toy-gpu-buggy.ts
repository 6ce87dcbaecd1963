/**
 * The toy GPU with the classic driver bug: it ACKS BEFORE ITS FLUSH COMPLETES. At
 * invalidate_range_start it posts the TLB-invalidate command and acks at once; it waits for the
 * command's completion (and drops the cache entries) only when it gets to it, in
 * invalidate_range_end. By then mm has cleared the PTEs and freed the pages: the GPU held
 * translations to freed frames (teardown-before-free) and may have used them
 * (no-stale-access). A single-page invalidation is posted the same way and completes
 * --flush-ms later, on its own.
 *
 *   mm (munmap)                               toy-gpu-buggy
 *   range_start [a, b)           --->         post flush; ack at once
 *   clear PTEs, free pfn 12                   (cache still maps a → pfn 12)
 *   range_end [a, b)             --->         wait for the flush: smap.clear a → pfn 12
 *                                             ← teardown-before-free: pfn 12 freed while mapped
 *
 * Run: node dist/examples/byo/toy-gpu-buggy.js --creds <file> [--flush-ms 20]
 * `mmlab conform --subscriber <name>` fails it, naming the rule.
 */
import type { ReqParsed } from '@mmlab/protocol';
import { sleep } from '@mmlab/runtime';
import { type DeviceCallbackCtx, runDevice } from '@mmlab/subscriber';
import { ToyGpu, flushMsOf } from './toy-gpu';

export class ToyGpuBuggy extends ToyGpu {
  /** the flush commands posted at a range start, by inv, not waited for yet */
  private readonly posted = new Map<string, Promise<void>>();

  /** BUG: the flush is posted, not waited for: the ack goes out before it completes. */
  override readonly invalidateRangeStart = (
    req: ReqParsed<'mnInvalidateRangeStart'>,
  ): Promise<void> => {
    this.posted.set(req.inv, sleep(this.flushMs));
    return Promise.resolve();
  };

  /** ...its completion is waited for here, long after mm went on. */
  override readonly invalidateRangeEnd = async (
    req: ReqParsed<'mnInvalidateRangeEnd'>,
    { op }: DeviceCallbackCtx,
  ): Promise<void> => {
    await this.posted.get(req.inv);
    this.posted.delete(req.inv);
    this.cache.zap(req.pid, req.start, req.end, op);
  };

  /** BUG: the same for one page (the flush completes on its own, --flush-ms later). */
  override readonly invalidatePage = (
    req: ReqParsed<'mnInvalidatePage'>,
    { op }: DeviceCallbackCtx,
  ): Promise<void> => {
    void this.flush(req.pid, req.addr, req.addr + 4096, op);
    return Promise.resolve();
  };
}

if (require.main === module) runDevice(new ToyGpuBuggy(flushMsOf(process.argv, process.env)));
