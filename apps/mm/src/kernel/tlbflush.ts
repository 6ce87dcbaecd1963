/**
 * flush_tlb_mm_range(): shoot down the CPU TLB entries of [start, end) on every CPU in
 * mm_cpumask and wait for each ack. Called with the PT lock held, as the kernel does: CPUs
 * answer at once (they are not notifier subscribers and never sleep on our behalf).
 */
import { MmlabError } from '@mmlab/protocol';
import type { MmContext } from './context';

const CPU_AGENT = /^cpu(\d+)$/;

export async function flushTlbRange(
  ctx: MmContext,
  op: string,
  pid: number,
  start: number,
  end: number,
  cpumask: string[],
): Promise<void> {
  const cpus = cpumask
    .map((a) => CPU_AGENT.exec(a)?.[1])
    .filter((id): id is string => id !== undefined);
  await Promise.all(
    cpus.map(async (id) => {
      try {
        await ctx.rpc.call(
          'cpuFlushTlb',
          { pid, start, end, op },
          { id, timeoutMs: ctx.env.MMLAB_RPC_TIMEOUT_MS },
        );
      } catch (e) {
        // A CPU that does not answer is offline: it holds no TLB any more (an agent process
        // that restarts starts with an empty TLB). Take it out of mm_cpumask.
        if (e instanceof MmlabError && (e.code === 'ENOHANDLER' || e.code === 'ETIMEDOUT')) {
          await ctx.store.cpumaskClear(pid, `cpu${id}`);
          return;
        }
        throw e;
      }
    }),
  );
}
