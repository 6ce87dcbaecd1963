import { type DynamicModule, Module } from '@nestjs/common';
import { MmlabError } from '@mmlab/protocol';
import { type FastHandler, controlController, fastRpc } from '@mmlab/runtime';
import type { Cpu } from './cpu';

/**
 * mmlab.cpu.<id>.access and .flush_tlb for this CPU, the two subjects of the CPU-driven fault
 * path (a load or store; the TLB shootdown mm sends under a PT lock): served past Nest's
 * router, on raw subscriptions with the same schemas and envelope (fastRpc, libs/runtime).
 */
export function cpuFastHandlers(cpu: Cpu): FastHandler[] {
  return [
    fastRpc('cpuAccess', cpu.id, (req) => {
      if (req.op === 'write' && req.value === undefined)
        throw new MmlabError('EBADMSG', 'a write needs a value');
      return cpu.access(req.pid, req.addr, req.op, req.value);
    }),
    // flush_tlb_func(): the shootdown IPI
    fastRpc('cpuFlushTlb', cpu.id, async (req) => ({
      flushed: await cpu.flushTlb(req.pid, req.start, req.end, req.op),
    })),
  ];
}

/** The rest of a CPU's subjects (ping, config, flush), through Nest. */
@Module({})
export class CpuModule {
  static register(tracer: Parameters<typeof controlController>[0]): DynamicModule {
    return { module: CpuModule, controllers: [controlController(tracer)] };
  }
}
