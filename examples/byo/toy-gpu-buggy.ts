/**
 * The toy GPU with the classic driver bug: it ACKS BEFORE ITS FLUSH COMPLETES. It posts the
 * TLB-invalidate command and returns at once; the cache entries go only when the command
 * completes, --flush-ms later. By then mm has freed (and maybe reused) the pages: the GPU held
 * translations to freed frames (teardown-before-free) and may access them (no-stale-access).
 *
 *   mm (munmap)                               toy-gpu-buggy
 *   range_start [a, b)           --->         post flush; ack at once
 *   clear PTEs, free pfn 12                   (cache still maps a → pfn 12)
 *   range_end                    --->         ... flush completes: smap.clear a → pfn 12
 *                                             ← teardown-before-free: pfn 12 freed while mapped
 *
 * Run: node dist/examples/byo/toy-gpu-buggy.js --creds <file> [--flush-ms 20]
 * `mmlab conform --subscriber <name>` fails it, naming the rule.
 */
import type { ReqParsed } from '@mmlab/protocol';
import { type DeviceCallbackCtx, runDevice } from '@mmlab/subscriber';
import { ToyGpu, flushMsOf } from './toy-gpu';

export class ToyGpuBuggy extends ToyGpu {
  /** BUG: the flush is posted, not waited for. */
  override readonly invalidateRangeStart = (
    req: ReqParsed<'mnInvalidateRangeStart'>,
    { op }: DeviceCallbackCtx,
  ): Promise<void> => {
    void this.flush(req.pid, req.start, req.end, op);
    return Promise.resolve();
  };

  /** BUG: the same for one page. */
  override readonly invalidatePage = (
    req: ReqParsed<'mnInvalidatePage'>,
    { op }: DeviceCallbackCtx,
  ): Promise<void> => {
    void this.flush(req.pid, req.addr, req.addr + 4096, op);
    return Promise.resolve();
  };
}

if (require.main === module) runDevice(new ToyGpuBuggy(flushMsOf(process.argv, process.env)));
