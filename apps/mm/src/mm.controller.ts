/**
 * The mm's syscall and fault entry points on NATS (queue group "mm": one replica answers).
 * The syscalls are Nest handlers (@Rpc); the fault, the one hot subject, is served on a raw
 * subscription with the same schemas and envelope (mmFastHandlers, fastRpc in libs/runtime).
 */
import { Controller, Inject } from '@nestjs/common';
import { MmlabError, type ReqParsed } from '@mmlab/protocol';
import { type FastHandler, Rpc, fastRpc } from '@mmlab/runtime';
import { MM_CONTEXT } from './tokens';
import type { MmContext } from './kernel/context';
import { handleMmFault } from './kernel/memory';
import { doFork } from './kernel/fork';
import { getUserPages, unpinUserPages } from './kernel/gup';
import { doMmap, doMunmap, exitMmap, madviseDontneed, mmCreate } from './kernel/mmap';
import { mmuNotifierRegister, mmuNotifierUnregister } from './kernel/mmu_notifier';
import { drainAllPages } from './kernel/page_alloc';
import { doMprotect } from './kernel/mprotect';
import { doMremap } from './kernel/mremap';
import { ksmMerge } from './kernel/ksm';
import { tryToFreePages } from './kernel/vmscan';
import { fileCreate, fileRead, fileWrite, sysMsync } from './kernel/filemap';
import { collapseHugePage, sysThpSplit } from './kernel/huge_memory';
import { sysRemapFilePages } from './kernel/fremap';
import { hugetlbMmap } from './kernel/hugetlb';

/** mmlab.mm.fault: handle_mm_fault() for a CPU (or any agent); replies with the PTE installed. */
async function fault(ctx: MmContext, req: ReqParsed<'fault'>) {
  const r = await handleMmFault(ctx, req.pid, req.addr, req.access, req.agent);
  return { pfn: r.pfn, gen: r.gen, writable: r.writable, kind: r.kind, retries: r.retries };
}

/** The subjects of mm served past Nest's router (startMicroservice's `fast`). */
export function mmFastHandlers(ctx: MmContext): FastHandler[] {
  return [fastRpc('fault', undefined, (req) => fault(ctx, req))];
}

@Controller()
export class MmController {
  constructor(@Inject(MM_CONTEXT) private readonly ctx: MmContext) {}

  @Rpc('processCreate')
  async processCreate() {
    return { pid: await mmCreate(this.ctx) };
  }

  @Rpc('mmap')
  async mmap(req: ReqParsed<'mmap'>) {
    if (req.flags.includes('shared') && req.flags.includes('private'))
      throw new MmlabError('EINVAL', 'mmap: flags shared and private exclude each other');
    if (req.flags.includes('hugetlb')) {
      if (req.file !== undefined)
        throw new MmlabError('EINVAL', 'mmap: MAP_HUGETLB maps no file of this lab');
      const shared = req.flags.includes('shared');
      return { addr: await hugetlbMmap(this.ctx, req.pid, req.pages, req.prot, shared) };
    }
    const file = req.file === undefined ? null : { ino: req.file, pgoff: req.pgoff };
    return {
      addr: await doMmap(
        this.ctx,
        req.pid,
        req.pages,
        req.prot,
        req.flags.includes('shared'),
        file,
      ),
    };
  }

  @Rpc('fileCreate')
  async fileCreate(req: ReqParsed<'fileCreate'>) {
    return { ino: await fileCreate(this.ctx, req.pages, req.xip) };
  }

  @Rpc('fileWrite')
  async fileWrite(req: ReqParsed<'fileWrite'>) {
    return fileWrite(this.ctx, req.ino, req.page, req.value);
  }

  @Rpc('fileRead')
  async fileRead(req: ReqParsed<'fileRead'>) {
    return fileRead(this.ctx, req.ino, req.page);
  }

  @Rpc('thpSplit')
  async thpSplit(req: ReqParsed<'thpSplit'>) {
    return sysThpSplit(this.ctx, req.pid, req.addr);
  }

  @Rpc('thpCollapse')
  async thpCollapse(req: ReqParsed<'thpCollapse'>) {
    return collapseHugePage(this.ctx, req.pid, req.addr);
  }

  @Rpc('msync')
  async msync(req: ReqParsed<'msync'>) {
    return sysMsync(this.ctx, req.pid, req.addr, req.pages);
  }

  @Rpc('remapFilePages')
  async remapFilePages(req: ReqParsed<'remapFilePages'>) {
    return sysRemapFilePages(this.ctx, req.pid, req.addr, req.pages, req.pgoff);
  }

  @Rpc('munmap')
  async munmap(req: ReqParsed<'munmap'>) {
    return doMunmap(this.ctx, req.pid, req.addr, req.pages);
  }

  @Rpc('fork')
  async fork(req: ReqParsed<'fork'>) {
    return { pid: await doFork(this.ctx, req.pid) };
  }

  @Rpc('mprotect')
  async mprotect(req: ReqParsed<'mprotect'>) {
    return { changed: await doMprotect(this.ctx, req.pid, req.addr, req.pages, req.prot) };
  }

  @Rpc('mremap')
  async mremap(req: ReqParsed<'mremap'>) {
    return doMremap(this.ctx, req.pid, req.addr, req.pages, req.newPages ?? req.pages);
  }

  @Rpc('madvise')
  async madvise(req: ReqParsed<'madvise'>) {
    return madviseDontneed(this.ctx, req.pid, req.addr, req.pages);
  }

  @Rpc('exit')
  async exit(req: ReqParsed<'exit'>) {
    return exitMmap(this.ctx, req.pid);
  }

  @Rpc('gup')
  async gup(req: ReqParsed<'gup'>) {
    return {
      pages: await getUserPages(
        this.ctx,
        req.pid,
        req.addr,
        req.pages,
        req.write,
        req.pin,
        req.agent,
        req.force,
      ),
    };
  }

  @Rpc('unpin')
  async unpin(req: ReqParsed<'unpin'>) {
    return { freed: await unpinUserPages(this.ctx, req.pid, req.agent, req.pages) };
  }

  @Rpc('notifierRegister')
  async notifierRegister(req: ReqParsed<'notifierRegister'>) {
    await mmuNotifierRegister(this.ctx, req.pid, req.subscriber, req.ops);
    return { registered: true };
  }

  @Rpc('notifierUnregister')
  async notifierUnregister(req: ReqParsed<'notifierUnregister'>) {
    return { unregistered: await mmuNotifierUnregister(this.ctx, req.pid, req.subscriber) };
  }

  /**
   * /proc/meminfo, plus the PT-lock and mmap_sem leases held anywhere right now. The mm
   * replicas' batches of frames go back first (drainAllPages: one read, and one request per
   * replica that holds a batch), so that free counts every frame nothing maps.
   */
  @Rpc('meminfo')
  async meminfo() {
    await drainAllPages(this.ctx);
    const [m, locks] = await Promise.all([this.ctx.store.memInfo(), this.ctx.store.allHeldLocks()]);
    return { frames: m.frames, free: m.free, allocated: m.frames - m.free, locks };
  }

  /** A synchronous reclaim pass: try_to_free_pages() with that target (vmscan.ts). */
  @Rpc('reclaim')
  async reclaim(req: ReqParsed<'reclaim'>) {
    return tryToFreePages(this.ctx, 'request', req.pages);
  }

  /** One synchronous ksmd pass over the ranges: ksm_do_scan() (ksm.ts). */
  @Rpc('ksmMerge')
  async ksmMerge(req: ReqParsed<'ksmMerge'>) {
    return ksmMerge(this.ctx, req.ranges);
  }

  /** /proc/swaps and the LRU lists. */
  @Rpc('swapinfo')
  async swapinfo() {
    return this.ctx.store.swapInfo();
  }
}
