/** The mm's syscall and fault entry points on NATS (queue group "mm": one replica answers). */
import { Controller, Inject } from '@nestjs/common';
import type { ReqParsed } from '@mmlab/protocol';
import { Rpc } from '@mmlab/runtime';
import { MM_CONTEXT } from './tokens';
import type { MmContext } from './kernel/context';
import { handleMmFault } from './kernel/memory';
import { doMmap, doMunmap, mmCreate } from './kernel/mmap';

@Controller()
export class MmController {
  constructor(@Inject(MM_CONTEXT) private readonly ctx: MmContext) {}

  @Rpc('processCreate')
  async processCreate() {
    return { pid: await mmCreate(this.ctx) };
  }

  @Rpc('mmap')
  async mmap(req: ReqParsed<'mmap'>) {
    return {
      addr: await doMmap(this.ctx, req.pid, req.pages, req.prot, req.flags.includes('shared')),
    };
  }

  @Rpc('munmap')
  async munmap(req: ReqParsed<'munmap'>) {
    return doMunmap(this.ctx, req.pid, req.addr, req.pages);
  }

  @Rpc('fault')
  async fault(req: ReqParsed<'fault'>) {
    const r = await handleMmFault(this.ctx, req.pid, req.addr, req.access, req.agent);
    return { pfn: r.pfn, gen: r.gen, writable: r.writable, kind: r.kind, retries: r.retries };
  }

  @Rpc('meminfo')
  async meminfo() {
    const m = await this.ctx.store.memInfo();
    return { frames: m.frames, free: m.free, allocated: m.frames - m.free };
  }
}
