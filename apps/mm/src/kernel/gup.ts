/**
 * mm/memory.c v3.7: get_user_pages() for a device — a network page fault of an ODP MR
 * (ib_umem_odp_map_dma_pages, nothing held), or a pinned registration (ib_umem_get: under
 * mmap_sem for write, charged to pinned_vm against RLIMIT_MEMLOCK first, then every page
 * pinned) — and the pins' release.
 */
import { type GupPage, MmlabError, PAGE_SIZE } from '@mmlab/protocol';
import { type MmContext, startVpn } from './context';
import { mmapWriteLock, mmapWriteUnlock } from './locks';
import { handleMmFault } from './memory';

/**
 * RLIMIT_MEMLOCK in pages (MMLAB_MEMLOCK_PAGES; default a quarter of the frames): what one
 * process's pinned registrations may pin together (pinned_vm).
 */
export const memlockLimit = (ctx: MmContext): number =>
  ctx.env.MMLAB_MEMLOCK_PAGES ?? Math.floor(ctx.env.MMLAB_FRAMES / 4);

/**
 * Fault in [addr, addr + pages) for a device and report each page's frame. With pin, each
 * frame gets a reference that only unpin drops: the frame can then never be freed or reused
 * under the device, whatever the page tables do (the pre-ODP way, and its problems: RAM limits,
 * and a COW after fork leaves the device on the old page). Without pin nothing is held: the
 * caller must follow invalidations (ODP). A device sees EFAULT for every page the mapping
 * refuses: unmapped, PROT_NONE, or read-only when it asks for write (__get_user_pages: the
 * VM_FAULT_SIGSEGV of handle_mm_fault, or check_vma_flags, is -EFAULT). With force
 * (FOLL_FORCE, ib_umem_get of a read-only MR) a write fault on a read-only VMA is not refused:
 * the page is faulted for read (the kernel would break COW into a private read-only copy; with
 * anonymous memory the content is the same).
 *
 * A pinned registration is ib_umem_get(): down_write(&mm->mmap_sem) around all of it — the
 * RLIMIT_MEMLOCK check, the pinned_vm charge and every page's fault and pin — so no mmap,
 * munmap, mprotect, mremap or fork of the process can come between two of its pages, and no
 * other fault of the process goes on meanwhile (a fault is a reader: it finds mmap_sem
 * write-held and waits). Its own faults pass that check: they carry the lease's value. The
 * pages are charged to the process's pinned_vm against memlockLimit() BEFORE any page is
 * touched (ENOMEM, nothing mapped, when they do not fit); a failure later gives the charge and
 * the pins taken so far back, still under the lock.
 *
 *   ib_umem_get (mm-0)                        mprotect (mm-1)          CPU store, page 5
 *   down_write: token 7
 *   pinned_vm charge (checks lease 7)
 *   fault+pin page 0 (COW: range_start,                               fault: mmap_sem
 *     the subscriber is slow ...)             down_write: BUSY, sleeps  write-held → waits
 *   fault+pin page 1
 *   up_write
 *                                             down_write: token 8       fault → installed
 *
 * An ODP fault (pin false) takes no lease, as the CPU fault path does: 3.19's
 * ib_umem_odp_map_dma_pages takes mmap_sem for read around get_user_pages, and a read lease
 * would only add what the lease-free path already gives (it waits while a writer holds it).
 *
 * Models: get_user_pages() / __get_user_pages(), mm/memory.c v3.7; ib_umem_get()'s
 * down_write(mmap_sem), RLIMIT_MEMLOCK check and pinned_vm update, drivers/infiniband/core/umem.c
 * 3.19.
 */
export async function getUserPages(
  ctx: MmContext,
  pid: number,
  addr: number,
  pages: number,
  write: boolean,
  pin: boolean,
  agent: string,
  force = false,
): Promise<GupPage[]> {
  startVpn(addr, 'gup', pages); // EINVAL unless page aligned
  if (!pin) return gupPages(ctx, pid, addr, pages, write, false, agent, force, '');
  const op = ctx.ids.next('gup');
  const sem = await mmapWriteLock(ctx, pid, op);
  try {
    return await gupPages(ctx, pid, addr, pages, write, true, agent, force, sem.lease.value);
  } finally {
    await mmapWriteUnlock(ctx, sem);
  }
}

/** __get_user_pages() over [addr, +pages); with pin, under the caller's mmap_sem write lease sem. */
async function gupPages(
  ctx: MmContext,
  pid: number,
  addr: number,
  pages: number,
  write: boolean,
  pin: boolean,
  agent: string,
  force: boolean,
  sem: string,
): Promise<GupPage[]> {
  if (pin) await pinnedVmCharge(ctx, pid, pages, sem);
  const out: GupPage[] = [];
  try {
    for (let i = 0; i < pages; i++) {
      const a = addr + i * PAGE_SIZE;
      for (let attempt = 0; ; attempt++) {
        const pte = await faultForDevice(ctx, pid, a, write, force, agent, sem);
        if (pin && (pte.kind === 'hugetlb' || pte.kind === 'hugetlb-cow'))
          // follow_hugetlb_page()'s get_page of a subpage (the head's count) is not modelled:
          // a pin must never drop a tail frame's count to 0 (put_page would free it alone)
          throw new MmlabError(
            'EINVAL',
            `pinning hugetlb memory (0x${a.toString(16)}) is not modelled`,
          );
        if (pin) {
          // The frame may have been freed and reused since the fault: pin exactly that gen.
          const bad = await ctx.store.getPages([pte], 'ref', pinOwner(agent, pid));
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
    if (pin) {
      await dropPins(ctx, agent, pid, out);
      await ctx.store.pinnedVmUncharge(pid, pages);
    }
    throw e;
  }
}

/**
 * One page of __get_user_pages(): handle_mm_fault(), its SIGSEGV a device's EFAULT. sem: the
 * mmap_sem write lease the caller holds ('' none), passed on to the fault.
 */
async function faultForDevice(
  ctx: MmContext,
  pid: number,
  a: number,
  write: boolean,
  force: boolean,
  agent: string,
  sem: string,
) {
  try {
    return await handleMmFault(ctx, pid, a, write ? 'write' : 'read', agent, sem);
  } catch (e) {
    if (!(e instanceof MmlabError) || e.code !== 'SIGSEGV') throw e;
    if (write && force) {
      const vma = await ctx.store.findVma(pid, a / PAGE_SIZE);
      if (vma && vma.prot === 'r') return faultForDevice(ctx, pid, a, false, false, agent, sem);
    }
    throw new MmlabError(
      'EFAULT',
      `0x${a.toString(16)} of pid ${pid} is not accessible${write ? ' for write' : ''}`,
    );
  }
}

/**
 * ib_umem_get()'s check: npages + pinned_vm against RLIMIT_MEMLOCK, charged in the same
 * atomic step, which checks that the caller still holds mmap_sem for write (sem).
 */
async function pinnedVmCharge(
  ctx: MmContext,
  pid: number,
  pages: number,
  sem: string,
): Promise<void> {
  const limit = memlockLimit(ctx);
  const r = await ctx.store.pinnedVmCharge(pid, pages, limit, sem);
  if (r.ok) return;
  if (r.code === 'ESRCH') throw new MmlabError('ESRCH', `no process ${pid}`);
  if (r.code === 'ESTALE') throw new MmlabError('ESTALE', `lost mmap_sem of pid ${pid}`);
  throw new MmlabError(
    'ENOMEM',
    `pinning ${pages} pages for pid ${pid} passes RLIMIT_MEMLOCK: ${r.pinnedVm} pinned, ` +
      `limit ${limit} pages`,
  );
}

/**
 * ib_umem_release() of a pinned registration: drop the pins, all or nothing — a page that is
 * not a frame in use with that gen is the caller's error (EINVAL, nothing changed) — then give
 * the pages back to pid's pinned_vm. A frame nobody maps any more is freed now.
 * Models: ib_umem_release() → __ib_umem_release() (put_page), umem.c 3.19.
 */
export async function unpinUserPages(
  ctx: MmContext,
  pid: number,
  agent: string,
  pages: Array<{ pfn: number; gen: number }>,
): Promise<number> {
  const freed = await dropPins(ctx, agent, pid, pages);
  await ctx.store.pinnedVmUncharge(pid, pages.length);
  return freed;
}

/**
 * Who holds a pin: the device and the process it pinned for ({mem}:pins). The kernel needs no
 * such record — a driver can only put_page() what its own ib_umem holds — but on a bus anyone
 * can send unpin: a device dropping another's pins would free a frame still mapped (the
 * victim then reads whatever the frame is reused for).
 */
const pinOwner = (agent: string, pid: number): string => `${agent}@${pid}`;

async function dropPins(
  ctx: MmContext,
  agent: string,
  pid: number,
  pages: Array<{ pfn: number; gen: number }>,
): Promise<number> {
  const op = ctx.ids.next('unpin');
  const held = pages.filter((p) => p.pfn !== 0);
  const r = await ctx.store.putPages(held, 'unpin', '', pinOwner(agent, pid));
  if (r.bad.length) {
    // a frame in use with that gen, but not pinned by agent for pid: another's pin
    const given = new Map(held.map((p) => [p.pfn, p.gen]));
    const counts = await Promise.all(r.bad.map((pfn) => ctx.store.pageCounts(pfn)));
    const othersPin = r.bad.some((pfn, i) => counts[i].gen === given.get(pfn) && counts[i].ref > 0);
    throw new MmlabError(
      othersPin ? 'EPERM' : 'EINVAL',
      othersPin
        ? `unpin of frames ${agent} did not pin for pid ${pid}: ${r.bad.join(', ')}`
        : `unpin of frames that are not pinned with that gen: ${r.bad.join(', ')}`,
    );
  }
  const gens = new Map(held.map((p) => [p.pfn, p.gen]));
  for (const p of held) ctx.tracer.emit({ kind: 'frame.unpin', op, pfn: p.pfn, gen: p.gen, agent });
  for (const pfn of r.freed) ctx.tracer.emit({ kind: 'frame.free', op, pfn, gen: gens.get(pfn)! });
  return r.freed.length;
}
