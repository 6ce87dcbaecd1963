/**
 * An address space ({p:<pid>}): mm_struct, VMAs, page tables, the PT locks and mmap_sem as
 * leases, open range invalidations and intent records. One room per pid: every call here touches
 * the slot of one {p:<pid>} only.
 */
import {
  type Access,
  MmlabError,
  MnEvent,
  PTRS_PER_PTE,
  pmdIndexOf,
  TASK_SIZE,
  type Prot,
  PAGE_SIZE,
} from '@mmlab/protocol';
import { type ReplyOf, pairsOf } from '../boundary';
import { PAGE_TABLE_LOCK, procKeys, pteLockName, pteLockOfVpn } from '../keys';
import { MemStore, type PendingFrame } from '../mem/store';
import { type Pte, formatPte, parsePte } from '../pte';
import type { SCRIPTS } from '../scripts';
import { type Vma, formatVma, parseVma } from '../vma';

/** "vpn:pfn:gen:w" as a script replies it → the PTE and where. */
const parseVpnPte = (c: string): Pte & { vpn: number } => {
  const i = c.indexOf(':');
  return { vpn: Number(c.slice(0, i)), ...parsePte(c.slice(i + 1)) };
};

export type FaultStep =
  | {
      r: 'ZERO' | 'ANON' | 'SPURIOUS' | 'WP_SHARED' | 'NEED_WP' | 'SWAPIN' | 'FILE';
      pte: Pte;
      seq: number;
      /** a dead COW's cleared PTE was put back (read-only, the old page) first */
      undone: boolean;
      /** WP_SHARED: the page is a file's (the caller dirties it) */
      file?: boolean;
    }
  | { r: 'NEED_PAGE'; seq: number }
  /** THP: pte_none in an aligned anonymous range that may take a huge page at hvpn */
  | { r: 'NEED_HUGE'; hvpn: number; seq: number }
  /** THP: a write to a read-only huge entry at hvpn (its head page): do_huge_pmd_wp_page */
  | { r: 'NEED_HUGE_WP'; hvpn: number; head: Pte; seq: number }
  /** pte_none in a mapping of file ino: its page pgoff is needed (cow: a private copy of it) */
  | {
      r: 'NEED_FILE';
      ino: number;
      pgoff: number;
      cow: boolean;
      seq: number;
      /** the VMA is shared and writable (VM_WRITE|VM_SHARED) */
      wshared: boolean;
    }
  /** a swap entry: read the page of slot (gen: the slot's) in, and fault again with it */
  | { r: 'SWAP'; slot: number; gen: number; seq: number }
  | { r: 'BUSY'; what: string }
  | { r: 'SIGSEGV' }
  /** is_vm_hugetlb_page(): the caller runs hugetlb_fault */
  | { r: 'HUGETLB' }
  | { r: 'ESRCH' }
  | { r: 'FENCED' };

/** A PT-lock or mmap_sem lease held right now (lock: 'ptl:<pmd>', 'ptl:mm' or 'mmap_sem'). */
export interface HeldLease {
  lock: string;
  pid: number;
  owner: string;
  token: number;
  /** what is left of its TTL */
  ttlMs: number;
}

/**
 * A range invalidation between its invalidate_range_start and its invalidate_range_end, as
 * recorded in Redis ({p:<pid>}:inv and :invown). The record never changes; its owner does.
 */
export interface OpenInvalidation {
  readonly pid: number;
  readonly inv: string;
  /** the operation that started it (a munmap, a fault, ...) */
  readonly op: string;
  readonly start: number;
  readonly end: number;
  readonly event: MnEvent;
  /** the subscribers its invalidate_range_start was sent to: its end goes to them */
  readonly subscribers: readonly string[];
  /** the mm incarnation that owes the end: the sender, or the replica that took it over */
  readonly owner: string;
  /** open: mn.range_end not traced yet; ending: traced, the end is being dispatched */
  readonly state: 'open' | 'ending';
}

export type InvClaim =
  | { r: 'OK'; prev: 'open' | 'ending' }
  | { r: 'LOST'; owner: string }
  | { r: 'GONE' }
  /** the new owner is fenced off this address space (it was found dead): nothing taken */
  | { r: 'FENCED' };

/** An open invalidation as invOpen takes it; EINVAL for a malformed one (nothing written). */
export function checkInvRecord(r: Omit<OpenInvalidation, 'state'>): void {
  if (
    !Number.isSafeInteger(r.pid) ||
    r.pid <= 0 ||
    !r.inv ||
    !r.owner ||
    r.owner.includes('|') ||
    !Number.isSafeInteger(r.start) ||
    !Number.isSafeInteger(r.end) ||
    r.start < 0 ||
    r.end <= r.start ||
    !MnEvent.safeParse(r.event).success
  )
    throw new MmlabError('EINVAL', `malformed open invalidation ${JSON.stringify(r)}`);
}

/** owner was found dead and fenced off pid (keys.ts :fenced): it may record nothing there. */
export const fencedOffError = (owner: string, pid: number, what: string): MmlabError =>
  new MmlabError(
    'ESTALE',
    `${owner} was found dead and fenced off pid ${pid}: no ${what} recorded`,
  );

/** A multi-step operation's intent record, as a script step names it: its id and expected owner. */
export interface IntentRef {
  readonly id: string;
  /** the incarnation that must still own it */
  readonly owner: string;
}

/** What an intent record says about its operation (JSON in :intent:<id> rec). */
export interface IntentRec {
  syscall: 'munmap' | 'mprotect' | 'mremap' | 'fork' | 'madvise' | 'exit';
  /** the syscall's arguments, as its handler got them */
  args: Record<string, unknown>;
  /** where the caller waits for the reply (NATS reply subject and packet id), if known */
  reply?: { to: string; id: string };
}

/** A multi-step operation in flight ({p:<pid>}:intent:<id>). */
export interface Intent {
  pid: number;
  id: string;
  owner: string;
  rec: IntentRec;
  /**
   * frames whose PTEs (or huge entries) were cleared and not yet put, and the batch they will be
   * put as; hugetlb: a hugetlbfs pool page ("h<pfn>:<gen>", put back to the pool)
   */
  cleared: Array<{ pfn: number; gen: number; hugetlb?: true }>;
  batch: number;
  /** mremap: where the VMA went */
  newVpn?: number;
  /** fork: the frames of each copy_pte_range chunk (index n - 1: chunk n, batch <id>#c<n>) */
  chunks: Array<Array<{ pfn: number; gen: number }>>;
}

export type LockResult = { ok: true; token: number } | { ok: false; holder: string };

export class MmStore extends MemStore {
  /** Fence owner off f's address space; → whether a PTE there holds f (pendingFence). */
  async pendingFence(f: PendingFrame): Promise<boolean> {
    const k = procKeys(f.pid);
    const r = await this.call(
      'pendingFence',
      { pte: k.pte, fenced: k.fenced },
      { incarnation: f.owner, pfn: f.pfn, gen: f.gen },
    );
    return r === 1;
  }

  /**
   * A dead owner's try_to_unmap_one record: fence owner off pid, then → whether pid's PTE at vpn
   * still maps page (unmapFence: the unmap never happened).
   */
  async unmapFence(
    pid: number,
    rec: string,
    owner: string,
    vpn: number,
    page: { pfn: number; gen: number },
  ): Promise<boolean> {
    const k = procKeys(pid);
    const r = await this.call(
      'unmapFence',
      { pte: k.pte, fenced: k.fenced, unmapped: k.unmapped(rec) },
      { incarnation: owner, vpn, pfn: page.pfn, gen: page.gen },
    );
    return r === 1;
  }

  /**
   * Charge pages to pid's pinned_vm within limit, under the mmap_sem write lease semValue: the
   * new total, or ENOMEM / ESRCH / ESTALE (the lease was lost).
   */
  async pinnedVmCharge(
    pid: number,
    pages: number,
    limit: number,
    semValue: string,
  ): Promise<
    | { ok: true; pinnedVm: number }
    | { ok: false; code: 'ENOMEM' | 'ESRCH' | 'ESTALE'; pinnedVm: number }
  > {
    const k = procKeys(pid);
    const r = await this.call(
      'pinnedVmCharge',
      { mm: k.mm, semW: k.semW },
      { pages, limit, semValue },
    );
    if (r.r === 'OK') return { ok: true, pinnedVm: r.pinnedVm };
    return { ok: false, code: r.r, pinnedVm: r.r === 'ENOMEM' ? r.pinnedVm : 0 };
  }

  /** Give pages of pid's pinned_vm back; returns what is left. */
  async pinnedVmUncharge(pid: number, pages: number): Promise<number> {
    return this.call('pinnedVmUncharge', { mm: procKeys(pid).mm }, { pages });
  }

  /** pid's pinned_vm (pages pinned by devices for it). */
  async pinnedVm(pid: number): Promise<number> {
    return Number((await this.redis.hget(procKeys(pid).mm, 'pinnedVm')) ?? 0);
  }

  /**
   * Record r (owned by r.owner, state open) before its invalidate_range_start is sent.
   * EINVAL for a malformed record or an inv recorded already; ESTALE when r.owner was found
   * dead and fenced off the pid (fencedOffError); nothing written. Store.invOpen indexes the
   * pid for the owner first ({mm}:invpids).
   */
  async invOpen(r: Omit<OpenInvalidation, 'state'>): Promise<void> {
    checkInvRecord(r);
    const k = procKeys(r.pid);
    const record = JSON.stringify({
      op: r.op,
      start: r.start,
      end: r.end,
      event: r.event,
      subscribers: [...r.subscribers],
    });
    const ok = await this.call(
      'invOpen',
      { inv: k.inv, invown: k.invown, fenced: k.fenced },
      { inv: r.inv, record, owner: r.owner },
    );
    if (ok.r === 'FENCED') throw fencedOffError(r.owner, r.pid, 'invalidation');
    if (ok.r !== 'OK')
      throw new MmlabError('EINVAL', `invalidation ${r.inv} of pid ${r.pid} is open already`);
  }

  /** Move the end of inv from incarnation `from` to `to` (atomic: one winner); see invClaim. */
  async invClaim(pid: number, inv: string, from: string, to: string): Promise<InvClaim> {
    if (to.includes('|')) throw new MmlabError('EINVAL', `bad incarnation ${to}`);
    const k = procKeys(pid);
    const r = await this.call(
      'invClaim',
      { invown: k.invown, fenced: k.fenced },
      { inv, from, to },
    );
    if (r.r === 'OK') return { r: 'OK', prev: r.prev === 'ending' ? 'ending' : 'open' };
    return r;
  }

  /**
   * Fence a dead incarnation off pid (invFence) before the reaper drops pid from its index:
   * → true if it was not fenced there yet.
   */
  /**
   * Fence a dead incarnation off pid (as invFence) and read the reserve frames of its batch its
   * faults installed there ({p:<pid>}:rsv, pcpFence).
   */
  async pcpFence(
    pid: number,
    incarnation: string,
  ): Promise<{ fenced: boolean; installed: Array<{ pfn: number; gen: number }> }> {
    const k = procKeys(pid);
    const r = await this.call('pcpFence', { fenced: k.fenced, rsv: k.rsv }, { incarnation });
    const installed = r.installed
      .split(' ')
      .filter((e) => /^\d+:\d+$/.test(e))
      .map((e) => {
        const [pfn, gen] = e.split(':').map(Number);
        return { pfn, gen };
      });
    return { fenced: r.added === 1, installed };
  }

  /** Forget a dead incarnation's :rsv record of pid once {mem} has none of its reserve left. */
  async reserveForget(pid: number, incarnation: string): Promise<void> {
    await this.redis.hdel(procKeys(pid).rsv, incarnation);
  }

  async invFence(pid: number, incarnation: string): Promise<boolean> {
    return (await this.call('invFence', { fenced: procKeys(pid).fenced }, { incarnation })) === 1;
  }

  /** Forget inv once its end was acked, if owner still owns it. */
  async invClose(pid: number, inv: string, owner: string): Promise<boolean> {
    const k = procKeys(pid);
    return (await this.call('invClose', { inv: k.inv, invown: k.invown }, { inv, owner })) === 1;
  }

  /** The open invalidations of pid, by inv (a record that does not parse is left out). */
  async openInvalidations(pid: number): Promise<OpenInvalidation[]> {
    const k = procKeys(pid);
    const [recs, owners] = await Promise.all([
      this.redis.hgetall(k.inv),
      this.redis.hgetall(k.invown),
    ]);
    const out: OpenInvalidation[] = [];
    for (const inv of Object.keys(recs).sort()) {
      const own = /^(.*)\|(open|ending)$/.exec(owners[inv] ?? '');
      if (!own) continue;
      try {
        const r = JSON.parse(recs[inv]) as Record<string, unknown>;
        const event = MnEvent.safeParse(r.event);
        if (
          typeof r.op !== 'string' ||
          typeof r.start !== 'number' ||
          typeof r.end !== 'number' ||
          !event.success ||
          !Array.isArray(r.subscribers)
        )
          continue;
        out.push({
          pid,
          inv,
          op: r.op,
          start: r.start,
          end: r.end,
          event: event.data,
          subscribers: r.subscribers.map(String),
          owner: own[1],
          state: own[2] as 'open' | 'ending',
        });
      } catch {
        continue;
      }
    }
    return out;
  }

  /**
   * Which PT lock of pid covering [start, end) (its split PTE locks, up to 64 of them, and
   * page_table_lock) does owner hold right now, if any.
   */
  async ptlHeldBy(pid: number, owner: string, start: number, end: number): Promise<string | null> {
    const k = procKeys(pid);
    const first = Math.floor(start / PAGE_SIZE / PTRS_PER_PTE);
    const last = Math.max(first, Math.floor(Math.max(start, end - 1) / PAGE_SIZE / PTRS_PER_PTE));
    const locks = [PAGE_TABLE_LOCK];
    for (let i = first; i <= last && locks.length < 65; i++) locks.push(pteLockName(i));
    const keys = locks.map((l) => k.ptl(l));
    const r = await this.call('ptlHeldBy', keys, { owner });
    return r === null ? null : (locks[keys.indexOf(r)] ?? null);
  }

  /** do_mmap_pgoff(): → the first vpn of the new VMA, or why not (BUSY: mmap_sem is held). */
  async mmap(
    pid: number,
    pages: number,
    prot: Prot,
    shared: boolean,
    /** a mapping of file ino from its page pgoff (null: anonymous) */
    file: { ino: number; pgoff: number } | null = null,
  ): Promise<ReplyOf<(typeof SCRIPTS)['mmap']>> {
    const k = procKeys(pid);
    return this.call(
      'mmap',
      { mm: k.mm, vma: k.vma, semW: k.semW, semR: k.semR },
      {
        pages,
        prot,
        flags: shared ? 'shared' : '',
        limitVpn: TASK_SIZE / PAGE_SIZE,
        ino: file?.ino ?? '',
        pgoff: file?.pgoff ?? 0,
      },
    );
  }

  async semWriteLock(pid: number, owner: string, ttlMs: number): Promise<LockResult | 'ESRCH'> {
    const k = procKeys(pid);
    const r = await this.call(
      'semWriteLock',
      { semW: k.semW, mm: k.mm, fence: k.fence, semR: k.semR },
      { owner, ttlMs },
    );
    if (r.r === 'ESRCH') return 'ESRCH';
    return r.r === 'OK' ? { ok: true, token: r.token } : { ok: false, holder: r.holder };
  }

  /** down_read(&mm->mmap_sem) as a lease (a member of :sem:r); BUSY while a writer holds it. */
  async semReadLock(pid: number, owner: string, ttlMs: number): Promise<LockResult | 'ESRCH'> {
    const k = procKeys(pid);
    const r = await this.call(
      'semReadLock',
      { semW: k.semW, semR: k.semR, mm: k.mm, fence: k.fence },
      { owner, ttlMs },
    );
    if (r.r === 'ESRCH') return 'ESRCH';
    return r.r === 'OK' ? { ok: true, token: r.token } : { ok: false, holder: r.holder };
  }

  /** Renew a reader's lease; false when it had expired (it is dropped). */
  async semReadRenew(pid: number, value: string, ttlMs: number): Promise<boolean> {
    return (await this.call('semReadRenew', { semR: procKeys(pid).semR }, { value, ttlMs })) === 1;
  }

  /** up_read(); false when the lease had expired. */
  async semReadUnlock(pid: number, value: string): Promise<boolean> {
    return (await this.call('semReadUnlock', { semR: procKeys(pid).semR }, { value })) === 1;
  }

  async semWriteUnlock(pid: number, value: string): Promise<boolean> {
    const k = procKeys(pid);
    return (await this.call('semWriteUnlock', { semW: k.semW, mm: k.mm }, { value })) === 1;
  }

  /**
   * spin_lock(ptl) as a lease; for a step of the operation `intent` (whose owner must still be
   * intent.owner: else FENCED, the operation was taken over).
   */
  async ptlLock(
    pid: number,
    lock: string,
    owner: string,
    ttlMs: number,
    intent?: IntentRef,
  ): Promise<LockResult | { ok: false; fenced: string }> {
    const k = procKeys(pid);
    const r = await this.call(
      'ptlLock',
      {
        ptl: k.ptl(lock),
        ptlmax: k.ptlmax,
        fence: k.fence,
        intent: intent ? k.intent(intent.id) : k.mm,
      },
      { owner, ttlMs, lock, incarnation: intent?.owner ?? '' },
    );
    if (r.r === 'FENCED') return { ok: false, fenced: r.owner };
    return r.r === 'OK' ? { ok: true, token: r.token } : { ok: false, holder: r.holder };
  }

  /**
   * Record a multi-step operation before its first change; EINVAL if id is recorded already,
   * ESTALE if owner was found dead and fenced off pid (fencedOffError). Store.intentOpen
   * indexes the pid for the owner first ({mm}:invpids).
   */
  async intentOpen(pid: number, id: string, owner: string, rec: IntentRec): Promise<void> {
    const k = procKeys(pid);
    const ok = await this.call(
      'intentOpen',
      { intents: k.intents, intent: k.intent(id), fenced: k.fenced },
      { id, owner, rec: JSON.stringify(rec) },
    );
    if (ok.r === 'FENCED') throw fencedOffError(owner, pid, 'intent');
    if (ok.r !== 'OK')
      throw new MmlabError('EINVAL', `intent ${id} of pid ${pid} is recorded already`);
  }

  async intentClaim(
    pid: number,
    id: string,
    from: string,
    to: string,
  ): Promise<{ r: 'OK' } | { r: 'LOST'; owner: string } | { r: 'GONE' } | { r: 'FENCED' }> {
    const k = procKeys(pid);
    return this.call('intentClaim', { intent: k.intent(id), fenced: k.fenced }, { from, to });
  }

  async intentFlushed(pid: number, id: string, owner: string, batch: number): Promise<boolean> {
    const k = procKeys(pid);
    return (await this.call('intentFlushed', { intent: k.intent(id) }, { owner, batch })) === 1;
  }

  async intentClose(pid: number, id: string, owner: string): Promise<boolean> {
    const k = procKeys(pid);
    const keys = { intents: k.intents, intent: k.intent(id) };
    return (await this.call('intentClose', keys, { id, owner })) === 1;
  }

  /** The intents of pid in flight (a record that does not parse is left out). */
  async intents(pid: number): Promise<Intent[]> {
    const k = procKeys(pid);
    const ids = (await this.redis.smembers(k.intents)).sort();
    const out: Intent[] = [];
    for (const id of ids) {
      const h = await this.redis.hgetall(k.intent(id));
      if (!h.owner || !h.rec) continue;
      try {
        const rec = JSON.parse(h.rec) as IntentRec;
        out.push({
          pid,
          id,
          owner: h.owner,
          rec,
          batch: Number(h.batch ?? 0),
          cleared: (h.cleared ?? '')
            .split(' ')
            .filter((x) => x)
            .map((x) => {
              const [pfn, gen] = x.replace(/^h/, '').split(':').map(Number);
              return x.startsWith('h') ? { pfn, gen, hugetlb: true as const } : { pfn, gen };
            }),
          ...(h.newVpn !== undefined && { newVpn: Number(h.newVpn) }),
          chunks: Array.from({ length: Number(h.chunks ?? 0) }, (_, i) =>
            (h[`chunk:${i + 1}`] ?? '')
              .split(' ')
              .filter((x) => x)
              .map((x) => {
                const [pfn, gen] = x.split(':').map(Number);
                return { pfn, gen };
              }),
          ),
        });
      } catch {
        continue;
      }
    }
    return out;
  }

  async leaseRelease(key: string, value: string): Promise<boolean> {
    return (await this.call('leaseRelease', { lease: key }, { value })) === 1;
  }

  async leaseRenew(key: string, value: string, ttlMs: number): Promise<boolean> {
    return (await this.call('leaseRenew', { lease: key }, { value, ttlMs })) === 1;
  }

  /** → removed [start, end) vpn ranges, or null when the mmap_sem lease was lost. */
  async vmaUnmap(
    pid: number,
    semValue: string,
    s: number,
    e: number,
  ): Promise<Array<[number, number]> | null> {
    const k = procKeys(pid);
    const r = await this.call(
      'vmaUnmap',
      { vma: k.vma, semW: k.semW },
      { semValue, start: s, end: e },
    );
    if (r.r !== 'OK') return null;
    return pairsOf(r.removed, (a, b): [number, number] => [Number(a), Number(b)]);
  }

  /**
   * One step of the fault path. mmapSem: the mmap_sem write lease ("owner|token") the caller
   * holds itself, if any (a pinned registration faulting its pages in): its faults pass the
   * write-held check that sends everyone else's back (BUSY). batch: newPage is a frame of the
   * incarnation's per-replica batch (recorded in :rsv once installed); drop: :rsv entries of
   * the incarnation it reported installed since (forgotten first).
   */
  async fault(
    pid: number,
    vpn: number,
    access: Access,
    agent: string,
    newPage: { pfn: number; gen: number } | null,
    incarnation: string,
    mmapSem = '',
    batch: { batch: boolean; drop: ReadonlyArray<{ pfn: number; gen: number }> } = {
      batch: false,
      drop: [],
    },
    /** the swap entry newPage was read in for (do_swap_page), or null */
    swap: { slot: number; gen: number } | null = null,
    /** what newPage is for a mapping of a file: its page-cache page, or a private copy of it */
    file: '' | 'page' | 'cow' = '',
    /** the file page newPage is (NEED_FILE's pgoff) */
    filePgoff: number | null = null,
    /** THP: the huge page order a pte_none anonymous fault may take (0: small pages only) */
    thp = 0,
  ): Promise<FaultStep> {
    const k = procKeys(pid);
    const pmd = pmdIndexOf(vpn);
    const r = await this.call(
      'fault',
      {
        mm: k.mm,
        vma: k.vma,
        pte: k.pte,
        pmds: k.pmds,
        semW: k.semW,
        ptl: k.ptl(pteLockName(pmd)),
        cpumask: k.cpumask,
        fenced: k.fenced,
        rsv: k.rsv,
        pmdhuge: k.pmdhuge,
        ptlmm: k.ptlmm,
      },
      {
        vpn,
        access,
        newPfn: newPage?.pfn ?? '',
        newGen: newPage?.gen ?? '',
        pmd,
        agent,
        incarnation,
        mmapSem,
        batch: batch.batch && newPage ? 1 : 0,
        swap: swap ? `${swap.slot}:${swap.gen}:4` : '',
        file,
        filePgoff: filePgoff ?? '',
        thp,
        drop: [...batch.drop],
      },
    );
    if (r.r === 'SWAP') return { r: 'SWAP', slot: r.pfn, gen: r.gen, seq: r.seq };
    if (r.r === 'NEED_FILE') return { ...r, cow: r.cow === 1, wshared: r.wshared === 1 };
    if (r.r === 'NEED_HUGE_WP')
      return {
        r: r.r,
        hvpn: r.hvpn,
        head: { pfn: r.pfn, gen: r.gen, writable: r.w === 1 },
        seq: r.seq,
      };
    // ZERO, ANON, SPURIOUS, WP_SHARED, NEED_WP, SWAPIN: the PTE as it is now
    if ('pfn' in r)
      return {
        r: r.r,
        pte: { pfn: r.pfn, gen: r.gen, writable: r.w === 1 },
        seq: r.seq,
        undone: 'undone' in r && r.undone === 1,
        ...('file' in r && { file: r.file === 1 }),
      };
    return r;
  }

  async wpReuse(
    pid: number,
    vpn: number,
    expected: Pte,
    seq: number,
    agent: string,
    mmapSem = '',
  ): Promise<'OK' | 'RETRY' | 'BUSY'> {
    const k = procKeys(pid);
    const r = await this.call(
      'wpReuse',
      {
        mm: k.mm,
        pte: k.pte,
        semW: k.semW,
        ptl: k.ptl(pteLockOfVpn(vpn)),
        cpumask: k.cpumask,
      },
      { vpn, expected: formatPte(expected), seq, agent, mmapSem },
    );
    return r.r;
  }

  async wpCopyLock(
    pid: number,
    vpn: number,
    expected: Pte,
    seq: number,
    owner: string,
    ttlMs: number,
    lock: string,
    agent: string,
    incarnation: string,
    mmapSem = '',
  ): Promise<
    | { r: 'OK'; token: number; cpumask: string[] }
    | { r: 'RETRY' }
    | { r: 'FENCED' }
    | { r: 'BUSY'; what: 'ptl' | 'mmap_sem' }
  > {
    const k = procKeys(pid);
    const r = await this.call(
      'wpCopyLock',
      {
        mm: k.mm,
        pte: k.pte,
        semW: k.semW,
        ptl: k.ptl(lock),
        ptlmax: k.ptlmax,
        fence: k.fence,
        cpumask: k.cpumask,
        fenced: k.fenced,
      },
      {
        vpn,
        expected: formatPte(expected),
        seq,
        owner,
        ttlMs,
        lock,
        agent,
        incarnation,
        mmapSem,
      },
    );
    if (r.r === 'BUSY') return { r: 'BUSY', what: r.what === 'ptl' ? 'ptl' : 'mmap_sem' };
    return r;
  }

  /**
   * Fenced set_pte_at() + unlock (keep: the lock stays held, v3.6's change_pte comes next).
   * → 'OK'; 'ESTALE' when the lease was lost (nothing written); 'UNFENCED' when it was lost
   * but skipFence (the injected fault skip-fence-check) wrote anyway.
   */
  async setPteUnlock(
    pid: number,
    lock: string,
    value: string,
    token: number,
    vpn: number,
    pte: Pte,
    incarnation: string,
    opts: { keep?: boolean; skipFence?: boolean } = {},
  ): Promise<'OK' | 'UNFENCED' | 'ESTALE'> {
    const k = procKeys(pid);
    const r = await this.call(
      'setPteUnlock',
      { ptl: k.ptl(lock), ptlmax: k.ptlmax, pte: k.pte, fenced: k.fenced },
      {
        value,
        lock,
        token,
        vpn,
        pte: formatPte(pte),
        keep: opts.keep ? 'keep' : '',
        skip: opts.skipFence ? 'skip-fence' : '',
        incarnation,
      },
    );
    if (r.r !== 'OK') return 'ESTALE';
    return r.withLease === 1 ? 'OK' : 'UNFENCED';
  }

  async zapPteRange(
    pid: number,
    lock: string,
    value: string,
    token: number,
    s: number,
    e: number,
    intent?: IntentRef,
  ): Promise<{ cleared: Array<{ vpn: number } & Pte>; cpumask: string[] } | null> {
    const k = procKeys(pid);
    const r = await this.call(
      'zapPteRange',
      {
        ptl: k.ptl(lock),
        ptlmax: k.ptlmax,
        pte: k.pte,
        cpumask: k.cpumask,
        intent: intent ? k.intent(intent.id) : k.mm,
      },
      { value, lock, token, start: s, end: e, incarnation: intent?.owner ?? '' },
    );
    if (r.r !== 'OK') return null;
    return { cleared: r.cleared.map(parseVpnPte), cpumask: r.cpumask };
  }

  /**
   * try_to_unmap_one()'s PTE step under a held PT lock (tryToUnmapOne in mm/scripts.ts): →
   * 'OK' with what the PTE was and mm_cpumask, 'GONE' when it no longer maps the frame, null
   * when the lease was lost.
   */
  async tryToUnmapOne(
    pid: number,
    lock: string,
    value: string,
    token: number,
    vpn: number,
    page: { pfn: number; gen: number },
    /** the swap entry the PTE becomes; null: a file's page, the PTE is cleared */
    slot: { slot: number; gen: number } | null,
    /** a file's page in a nonlinear mapping: the PTE becomes the file PTE of this page */
    pgoff: number | null = null,
    /** the caller's incarnation: refused once it is fenced off pid ('' unchecked) */
    incarnation = '',
    /** try_to_unmap_one's record: the PTE step is marked done for markTtl ms (unmapFence) */
    mark: { rec: string; ttlMs: number } | null = null,
  ): Promise<{ r: 'OK'; was: Pte; cpumask: string[] } | 'GONE' | null> {
    const k = procKeys(pid);
    const r = await this.call(
      'tryToUnmapOne',
      {
        ptl: k.ptl(lock),
        ptlmax: k.ptlmax,
        pte: k.pte,
        cpumask: k.cpumask,
        fenced: k.fenced,
        unmapped: mark ? k.unmapped(mark.rec) : k.mm,
      },
      {
        value,
        lock,
        token,
        vpn,
        pfn: page.pfn,
        gen: page.gen,
        slot: slot?.slot ?? 0,
        slotGen: slot?.gen ?? 0,
        pgoff: pgoff ?? '',
        incarnation,
        markTtl: mark?.ttlMs ?? 0,
      },
    );
    if (r.r === 'ESTALE') return null;
    if (r.r === 'GONE') return 'GONE';
    return {
      r: 'OK',
      was: parsePte(`${page.pfn}:${page.gen}:${r.w}`),
      cpumask: r.cpumask,
    };
  }

  /**
   * ptep_clear_flush_young()'s PTE step under a held PT lock: → whether the PTE was young (and
   * mm_cpumask to flush when it was), 'GONE' when it no longer maps the frame, null when the
   * lease was lost.
   */
  async ptepClearFlushYoung(
    pid: number,
    lock: string,
    value: string,
    token: number,
    vpn: number,
    page: { pfn: number; gen: number },
  ): Promise<{ young: boolean; cpumask: string[] } | 'GONE' | null> {
    const k = procKeys(pid);
    const r = await this.call(
      'ptepClearFlushYoung',
      { ptl: k.ptl(lock), ptlmax: k.ptlmax, pte: k.pte, cpumask: k.cpumask },
      { value, lock, token, vpn, pfn: page.pfn, gen: page.gen },
    );
    if (r.r === 'ESTALE') return null;
    if (r.r === 'GONE') return 'GONE';
    return { young: r.young === 1, cpumask: r.cpumask };
  }

  /** remap_file_pages()'s VMA change (nonlinear, or a linear VMA of its own at pgoff). */
  async vmaRemap(
    pid: number,
    semValue: string,
    start: number,
    end: number,
    pgoff: number,
    nonlinear: boolean,
  ): Promise<{ ino: number } | { einval: string } | null> {
    const k = procKeys(pid);
    const r = await this.call(
      'vmaRemap',
      { vma: k.vma, semW: k.semW },
      { semValue, start, end, pgoff, nonlinear: nonlinear ? 1 : 0 },
    );
    if (r.r === 'ESTALE') return null;
    return r.r === 'OK' ? { ino: r.ino } : { einval: r.why };
  }

  /** install_file_pte() over [start, end) of one page-table page, under its held PT lock. */
  async installFilePtes(
    pid: number,
    lock: string,
    value: string,
    token: number,
    start: number,
    end: number,
    pgoff: number,
  ): Promise<{ zapped: Array<Pte & { vpn: number }>; cpumask: string[] } | null> {
    const k = procKeys(pid);
    const r = await this.call(
      'installFilePtes',
      { ptl: k.ptl(lock), ptlmax: k.ptlmax, pte: k.pte, pmds: k.pmds, cpumask: k.cpumask },
      { value, lock, token, start, end, pgoff, pmd: pmdIndexOf(start) },
    );
    if (r.r === 'ESTALE') return null;
    return { zapped: r.zapped.map(parseVpnPte), cpumask: r.cpumask };
  }

  /** page_mkclean_one() under a held PT lock: write-protect pid's PTE at vpn if it maps page. */
  async pageMkcleanOne(
    pid: number,
    lock: string,
    value: string,
    token: number,
    vpn: number,
    page: { pfn: number; gen: number },
  ): Promise<{ cpumask: string[] } | 'CLEAN' | 'GONE' | null> {
    const k = procKeys(pid);
    const r = await this.call(
      'pageMkcleanOne',
      { ptl: k.ptl(lock), ptlmax: k.ptlmax, pte: k.pte, cpumask: k.cpumask },
      { value, lock, token, vpn, pfn: page.pfn, gen: page.gen },
    );
    if (r.r === 'ESTALE') return null;
    if (r.r === 'OK') return { cpumask: r.cpumask };
    return r.r;
  }

  /** Indexes of the page-table pages a process has (the PMD entries in use). */
  async pmds(pid: number): Promise<number[]> {
    return (await this.redis.smembers(procKeys(pid).pmds)).map(Number).sort((a, b) => a - b);
  }

  async walk(pid: number, vpn: number, agent: string): Promise<Pte | null> {
    const k = procKeys(pid);
    const r = await this.call(
      'walk',
      { pte: k.pte, cpumask: k.cpumask, pmdhuge: k.pmdhuge },
      { vpn, agent },
    );
    return r ? parsePte(r) : null;
  }

  async cpumaskClear(pid: number, agent: string): Promise<void> {
    await this.call('cpumaskClear', { cpumask: procKeys(pid).cpumask }, { agent });
  }

  /** Put agent (back) into mm_cpumask. */
  async cpumaskAdd(pid: number, agent: string): Promise<void> {
    await this.redis.sadd(procKeys(pid).cpumask, agent);
  }

  /** mm_cpumask of pid, sorted (tests and diagnostics). */
  async cpumask(pid: number): Promise<string[]> {
    return (await this.redis.smembers(procKeys(pid).cpumask)).sort();
  }

  /**
   * The PT-lock and mmap_sem leases of pid held right now. Every PT lock ever granted is a
   * field of :ptlmax (the fencing side), so its names say which lease keys to look at; the
   * lookup itself is one script on the {p:<pid>} slot (Redis Cluster safe).
   */
  async heldLocks(pid: number): Promise<HeldLease[]> {
    const k = procKeys(pid);
    const names = ['mmap_sem', ...(await this.redis.hkeys(k.ptlmax)).sort()];
    const keys = names.map((n) => (n === 'mmap_sem' ? k.semW : k.ptl(n)));
    const out: HeldLease[] = [];
    for (const l of await this.call('heldLocks', keys, { names })) {
      const bar = l.value.lastIndexOf('|');
      out.push({
        lock: l.lock,
        pid,
        owner: l.value.slice(0, bar),
        token: Number(l.value.slice(bar + 1)),
        ttlMs: Math.max(0, l.pttl),
      });
    }
    // mmap_sem's readers (each a member of :sem:r)
    for (const r of await this.call('semReaders', { semR: k.semR }, {})) {
      const bar = r.member.lastIndexOf('|');
      out.push({
        lock: 'mmap_sem',
        pid,
        owner: r.member.slice(0, bar),
        token: Number(r.member.slice(bar + 1)),
        ttlMs: Math.max(0, r.ttlMs),
      });
    }
    return out;
  }

  /** The VMA covering vpn, if any (a read: find_vma()). */
  async findVma(pid: number, vpn: number): Promise<Vma | null> {
    const [m] = await this.redis.zrevrangebyscore(procKeys(pid).vma, vpn, '-inf', 'LIMIT', 0, 1);
    const v = m ? parseVma(m) : null;
    return v && vpn < v.end ? v : null;
  }

  async vmas(pid: number): Promise<Vma[]> {
    return (await this.redis.zrange(procKeys(pid).vma, 0, -1)).map(parseVma);
  }

  async mmState(pid: number): Promise<{ state: string | null; mmapNext: number }> {
    const [state, next] = await this.redis.hmget(procKeys(pid).mm, 'state', 'mmapNext');
    return { state, mmapNext: Number(next ?? 0) };
  }

  async vmaProtect(
    pid: number,
    semValue: string,
    s: number,
    e: number,
    prot: Prot,
  ): Promise<'OK' | 'ESTALE' | 'ENOMEM'> {
    const k = procKeys(pid);
    const r = await this.call(
      'vmaProtect',
      { vma: k.vma, semW: k.semW },
      { semValue, start: s, end: e, prot },
    );
    return r.r;
  }

  async changePteRange(
    pid: number,
    lock: string,
    value: string,
    token: number,
    s: number,
    e: number,
    prot: Prot,
  ): Promise<{ changed: number; downgraded: number; cpumask: string[] } | null> {
    const k = procKeys(pid);
    const r = await this.call(
      'changePteRange',
      { ptl: k.ptl(lock), ptlmax: k.ptlmax, pte: k.pte, cpumask: k.cpumask },
      { value, lock, token, start: s, end: e, prot },
    );
    if (r.r !== 'OK') return null;
    return { changed: r.changed, downgraded: r.downgraded, cpumask: r.cpumask };
  }

  async vmaMove(
    pid: number,
    semValue: string,
    s: number,
    pages: number,
    newPages: number,
    intent?: IntentRef,
  ): Promise<{ r: 'OK'; n: number } | { r: 'ESTALE' | 'EFAULT' | 'ENOMEM' }> {
    const k = procKeys(pid);
    return this.call(
      'vmaMove',
      { mm: k.mm, vma: k.vma, semW: k.semW, intent: intent ? k.intent(intent.id) : k.mm },
      {
        semValue,
        start: s,
        pages,
        newPages,
        limitVpn: TASK_SIZE / PAGE_SIZE,
        incarnation: intent?.owner ?? '',
      },
    );
  }

  async movePtes(
    pid: number,
    lock: string,
    value: string,
    token: number,
    s: number,
    e: number,
    delta: number,
  ): Promise<{ moved: number; cpumask: string[] } | 'ESRCH' | null> {
    const k = procKeys(pid);
    const r = await this.call(
      'movePtes',
      {
        ptl: k.ptl(lock),
        ptlmax: k.ptlmax,
        pte: k.pte,
        pmds: k.pmds,
        cpumask: k.cpumask,
        mm: k.mm,
      },
      { value, lock, token, start: s, end: e, delta },
    );
    if (r.r === 'ESRCH') return 'ESRCH';
    if (r.r !== 'OK') return null;
    return { moved: r.moved, cpumask: r.cpumask };
  }

  async copyPteRange(
    pid: number,
    lock: string,
    value: string,
    token: number,
    s: number,
    e: number,
    cow: boolean,
    intent: { id: string; owner: string },
  ): Promise<{
    child: Array<{ vpn: number; pte: Pte }>;
    writeProtected: number;
    cpumask: string[];
    /** the chunk of fork's intent record these frames were recorded as */
    chunk: number;
  } | null> {
    const k = procKeys(pid);
    const r = await this.call(
      'copyPteRange',
      {
        ptl: k.ptl(lock),
        ptlmax: k.ptlmax,
        pte: k.pte,
        cpumask: k.cpumask,
        intent: k.intent(intent.id),
      },
      { value, lock, token, start: s, end: e, cow: cow ? 1 : 0, incarnation: intent.owner },
    );
    if (r.r !== 'OK') return null;
    const child = r.child.map((c) => {
      const i = c.indexOf(':');
      return { vpn: Number(c.slice(0, i)), pte: parsePte(c.slice(i + 1)) };
    });
    return { child, writeProtected: r.writeProtected, cpumask: r.cpumask, chunk: r.chunk };
  }

  /** dup_mm(): the child pid, being forked by forker, with the parent's VMA list; false if it exists. */
  async forkChild(pid: number, vmas: Vma[], mmapNext: number, forker: string): Promise<boolean> {
    const k = procKeys(pid);
    const r = await this.call(
      'forkChild',
      { mm: k.mm, vma: k.vma },
      { mmapNext, forker, vmas: vmas.map(formatVma) },
    );
    return r === 1;
  }

  /** The fork is complete: the child comes alive (false: not forker's child). */
  async forkDone(pid: number, forker: string): Promise<boolean> {
    return (await this.call('forkDone', { mm: procKeys(pid).mm }, { forker })) === 1;
  }

  /** Roll back the child of a fork that did not complete: 'ALIVE' if it had completed. */
  async forkUndo(pid: number, forker: string): Promise<'UNDONE' | 'ALIVE'> {
    const k = procKeys(pid);
    const keys = { mm: k.mm, vma: k.vma, pte: k.pte, pmds: k.pmds };
    return (await this.call('forkUndo', keys, { forker })).r;
  }

  /** The child's PTEs, written by its forker; false when the child is no longer forker's. */
  async setPtes(
    pid: number,
    forker: string,
    ptes: Array<{ vpn: number; pte: Pte }>,
  ): Promise<boolean> {
    if (ptes.length === 0) return true;
    const k = procKeys(pid);
    const n = await this.call(
      'setPtes',
      { pte: k.pte, pmds: k.pmds, mm: k.mm },
      { forker, ptes: ptes.map((p) => `${p.vpn}:${formatPte(p.pte)}`) },
    );
    return n >= 0;
  }

  /**
   * exit_mmap() begins: pid is exiting (every later fault, mmap_sem acquire, charge, move on it
   * refuses). → 'began'; 'again' when it was exiting already (an exit that failed half way);
   * 'ESRCH' when it is gone or never was.
   */
  async mmExitBegin(pid: number): Promise<'began' | 'again' | 'ESRCH'> {
    const r = await this.call('mmExitBegin', { mm: procKeys(pid).mm }, {});
    if (r.r !== 'OK') return 'ESRCH';
    return r.began === 1 ? 'began' : 'again';
  }

  /**
   * exit_mmap() ends: pid is dead, its VMAs and page-table pages gone. → 'ended' (by this call),
   * 'dead' (already), { ptes } when PTEs are left (nothing changed), 'ESRCH' when not exiting.
   */
  async mmExit(pid: number): Promise<'ended' | 'dead' | 'ESRCH' | { ptes: number }> {
    const k = procKeys(pid);
    const r = await this.call('mmExit', { mm: k.mm, vma: k.vma, pte: k.pte, pmds: k.pmds }, {});
    if (r.r === 'AGAIN') return { ptes: r.ptes };
    if (r.r === 'ESRCH') return 'ESRCH';
    return r.ended === 1 ? 'ended' : 'dead';
  }

  /**
   * Page-table snapshot of a process: vpn → PTE, in vpn order (tests and diagnostics). A stored
   * field that breaks the packed layout (mm/lua.ts) is an error.
   */
  async pageTable(pid: number): Promise<Map<number, Pte>> {
    const { ptes, bad } = await this.pteDump(pid);
    if (bad.length > 0)
      throw new Error(`pid ${pid}: corrupt page-table field(s) ${bad.join(', ')}`);
    return new Map(Object.entries(ptes).map(([vpn, v]) => [Number(vpn), parsePte(v)]));
  }

  /**
   * The page tables of pid as fsck reads them: vpn → "pfn:gen:w" (formatPte), in vpn order; a
   * stored field that breaks the packed layout (mm/lua.ts) is one entry "field:<name>" →
   * "corrupt page-table field" (none of its PTEs can be read).
   */
  async pageTableRaw(pid: number): Promise<Record<string, string>> {
    const { ptes, bad } = await this.pteDump(pid);
    for (const f of bad) ptes[`field:${f}`] = 'corrupt page-table field';
    return ptes;
  }

  private async pteDump(pid: number): Promise<{ ptes: Record<string, string>; bad: string[] }> {
    const r = await this.call('pteDump', { pte: procKeys(pid).pte }, {});
    const ptes: Record<string, string> = {};
    for (const c of r.ptes) {
      const i = c.indexOf(':');
      ptes[c.slice(0, i)] = c.slice(i + 1);
    }
    return { ptes, bad: r.bad };
  }

  /**
   * Write pid's PTE at vpn as given (null: pte_none), with no check at all: no lease, VMA, frame
   * count or :pmds. Only for tests that corrupt the state on purpose (fsck's).
   */
  async pokePte(pid: number, vpn: number, pte: Pte | null): Promise<void> {
    await this.call('ptePoke', { pte: procKeys(pid).pte }, { vpn, pte: pte ? formatPte(pte) : '' });
  }

  /** A PT lock's fencing side: the highest token granted for it, and whether it is held now. */
  async ptlState(pid: number, lock: string): Promise<{ max: number; locked: boolean }> {
    const k = procKeys(pid);
    // one connection, in this order: the newest grant first, then whether the lock is held
    const [max, locked] = await Promise.all([
      this.redis.hget(k.ptlmax, lock),
      this.redis.exists(k.ptl(lock)),
    ]);
    return { max: Number(max ?? 0), locked: locked === 1 };
  }
}
