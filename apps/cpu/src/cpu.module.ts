import { Controller, type DynamicModule, Module } from '@nestjs/common';
import { MmlabError, type ReqParsed } from '@mmlab/protocol';
import { Rpc, controlController } from '@mmlab/runtime';
import type { Cpu } from './cpu';

/** mmlab.cpu.<id>.access and .flush_tlb for this CPU. */
function cpuController(cpu: Cpu) {
  @Controller()
  class CpuController {
    @Rpc('cpuAccess', cpu.id)
    access(req: ReqParsed<'cpuAccess'>) {
      if (req.op === 'write' && req.value === undefined)
        throw new MmlabError('EBADMSG', 'a write needs a value');
      return cpu.access(req.pid, req.addr, req.op, req.value);
    }

    @Rpc('cpuFlushTlb', cpu.id)
    async flushTlb(req: ReqParsed<'cpuFlushTlb'>) {
      return { flushed: await cpu.flushTlb(req.pid, req.start, req.end, req.op) };
    }
  }
  return CpuController;
}

@Module({})
export class CpuModule {
  static register(cpu: Cpu, tracer: Parameters<typeof controlController>[0]): DynamicModule {
    return { module: CpuModule, controllers: [cpuController(cpu), controlController(tracer)] };
  }
}
