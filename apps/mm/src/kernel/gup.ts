/** mm/gup.c: get_user_pages() / pin_user_pages(FOLL_LONGTERM), and hmm_range_fault() for ODP. */
import { type GupPage, MmlabError, PAGE_SIZE } from '@mmlab/protocol';
import { type MmContext, startVpn } from './context';
import { handleMmFault } from './memory';
import { putPages } from './page_alloc';

/**
 * Fault in [addr, addr + pages) for a device and report each page's frame. With pin, each
 * frame gets a reference that only unpin drops: the frame can then never be freed or reused
 * under the device, whatever the page tables do (the pre-ODP way, and its problems: RAM limits,
 * and a COW after fork leaves the device on the old page). Without pin nothing is held: the
 * caller must follow invalidations (ODP). A device sees EFAULT for an unmapped or PROT_NONE
 * page and EPERM for a write the VMA forbids.
 */
export async function getUserPages(
  ctx: MmContext,
  pid: number,
  addr: number,
  pages: number,
  write: boolean,
  pin: boolean,
  agent: string,
): Promise<GupPage[]> {
  startVpn(addr, 'gup'); // EINVAL unless page aligned
  const out: GupPage[] = [];
  try {
    for (let i = 0; i < pages; i++) {
      const a = addr + i * PAGE_SIZE;
      for (let attempt = 0; ; attempt++) {
        let pte;
        try {
          pte = await handleMmFault(ctx, pid, a, write ? 'write' : 'read', agent);
        } catch (e) {
          if (e instanceof MmlabError && e.code === 'SIGSEGV') {
            const vma = await ctx.store.findVma(pid, a / PAGE_SIZE);
            if (vma && vma.prot === 'r' && write)
              throw new MmlabError('EPERM', `write to read-only 0x${a.toString(16)}`);
            throw new MmlabError('EFAULT', `0x${a.toString(16)} of pid ${pid} is not accessible`);
          }
          throw e;
        }
        if (pin) {
          // The frame may have been freed and reused since the fault: pin exactly that gen.
          const bad = await ctx.store.getPages([pte], 'ref');
          if (bad.length) {
            if (attempt > 16)
              throw new MmlabError('EAGAIN', `0x${a.toString(16)} keeps changing under gup`);
            continue;
          }
          ctx.tracer.emit({ kind: 'frame.pin', pfn: pte.pfn, gen: pte.gen, agent });
        }
        out.push({ addr: a, pfn: pte.pfn, gen: pte.gen, writable: pte.writable });
        break;
      }
    }
    return out;
  } catch (e) {
    if (pin) await unpinUserPages(ctx, agent, out);
    throw e;
  }
}

/** unpin_user_pages(): drop the pins; a frame nobody maps any more is freed now. */
export async function unpinUserPages(
  ctx: MmContext,
  agent: string,
  pages: Array<{ pfn: number; gen: number }>,
): Promise<number> {
  const op = ctx.ids.next('unpin');
  for (const p of pages)
    if (p.pfn !== 0) ctx.tracer.emit({ kind: 'frame.unpin', op, pfn: p.pfn, gen: p.gen, agent });
  return putPages(
    ctx,
    op,
    pages.filter((p) => p.pfn !== 0),
    'ref',
  );
}
