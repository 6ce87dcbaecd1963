/**
 * Models: nothing in the kernel. There, the CPU running munmap cannot die between
 * mmu_notifier_invalidate_range_start() and _end() without taking the whole machine down; in
 * mmlab an mm replica is a process that can be killed there, and every subscriber would then
 * keep the range active forever (an ODP fault in it: EAGAIN until the HCA restarts). This is
 * the lab's stand-in for the end the dead sender owed: every replica periodically looks for open
 * invalidations ({p:<pid>}:inv) whose owning incarnation's liveness lease ({mm}:live:<it>) has
 * expired, and sends their invalidate_range_end (invalidateRangeEndForDead).
 *
 * Where it looks: not in every process. Each incarnation indexes the pids it may own open
 * invalidations or intents on ({mm}:invpids:<it>, keys.ts), once per pid, before its first
 * invOpen / intentOpen / invClaim / intentClaim there (Store.invIndex); a scan reads the
 * incarnations that have an index ({mm}:invowners), checks their leases in one MGET, and reads
 * the pids of the ones whose lease is gone, and of no one else. A pass where every owner lives
 * costs 3 Redis calls (the owners, their leases, the pending frames) whatever the number of
 * processes; it cost 3 per process plus 3 before the index (test/reaper-index.e2e-spec.ts:
 * 12 calls with 3 processes, 312 with 103; now 3 and 3). An invalidation's bookkeeping stays 3
 * calls (invOpen, invClaim, invClose), plus one invIndex the first time an incarnation opens
 * one on a pid.
 *
 * The index is in {mm}, the records in {p:<pid>}: on Redis Cluster no script may write both,
 * so the index is written first, in a call of its own. A crash between the two leaves a pid
 * indexed with nothing of the incarnation's on it (one read of it when the incarnation is
 * found dead), never a record that is not indexed:
 *
 *   mm-0 (madvise of pid 7)                    mm-1 (scan)
 *   invIndex(mm-0.a1, 7)   {mm}:invpids:mm-0.a1 = {7}, once per pid
 *   invOpen(inv 9, owner mm-0.a1)  {p:7}
 *   ✗ killed
 *                                              SMEMBERS {mm}:invowners → mm-0.a1, mm-1.c3
 *                                              MGET their leases → mm-0.a1 gone (twice, a TTL apart)
 *                                              SMEMBERS {mm}:invpids:mm-0.a1 → 7
 *                                              invFence(7, mm-0.a1); read {p:7}: inv 9
 *                                              invIndex(mm-1.c3, 7); invClaim(9 → mm-1.c3);
 *                                              range_end(9); invClose(9)
 *                                              next scan: {p:7} has nothing of mm-0.a1:
 *                                              invUnindex(mm-0.a1, 7) → {mm}:invowners drops it
 *
 * Dropping a pid from an index is the one step that could lose an orphan: an incarnation taken
 * for dead that was only stopped skips invIndex for a pid it indexed already (the Store's
 * cache), so were the pid dropped and then an invalidation opened, no index would name it. So
 * the incarnation is fenced off the pid first ({p:<pid>}:fenced, invFence), and invOpen,
 * invClaim, intentOpen and intentClaim refuse a fenced incarnation in the same script that
 * would write the record; the pid's records are read after the fence, so that what is read is
 * all the incarnation will ever own there:
 *
 *   mm-0 (stopped past its lease, twice)       mm-1 (scan)
 *                                              invFence(7, mm-0.a1)
 *                                              read {p:7}: nothing of mm-0.a1
 *                                              invUnindex(mm-0.a1, 7)
 *   SIGCONT; invOpen(inv 10 on 7): cached as
 *   indexed, no invIndex → FENCED, ESTALE,
 *   nothing written; onFenced: serves on as a
 *   new incarnation (new index)
 *
 * State (per replica): deadSince — incarnation → when this replica first found its lease gone,
 * dropped as soon as it is found alive again. An owner is taken for dead only once its lease
 * was found gone on scans at least one TTL apart, with no scan finding it alive in between: a
 * replica stopped for a moment (SIGSTOP, a long GC) just past its TTL is not robbed of its ends
 * while it can still go on with the body of the invalidation.
 *
 * Invariant: an open invalidation of a live incarnation is never finished here (the owner of
 * each record is checked, and the take-over is one script: invClaim). What remains is the
 * check-then-claim gap: an owner found dead, stopped not killed, that renews just then loses
 * its end to us; its own invalidateRangeEnd then finds the record taken and sends none (one end
 * per inv either way), but it may finish its body after the range was reopened.
 *
 *   mm-1 (scan)                              mm-0 (stopped past TTL + TTL)
 *   EXISTS {mm}:live:mm-0.a1 → 0 (twice)
 *                                            SIGCONT; renews its lease
 *   invClaim(7: mm-0.a1 → mm-1.c3) → OK
 *   range_end(7) to hca0                     invalidateRangeEnd(7): invClaim → LOST, no end
 *
 * The same scan finishes the multi-step operations (intent records, intent.ts) of dead
 * incarnations: at the first scan that finds the owner's lease gone, since the take-over fences
 * the owner (a stopped one that resumes is refused the operation's PT locks), so nothing is lost
 * by not waiting a second TTL. The caller of the operation gets EOWNERDEAD from here within one
 * lease TTL of the death: an mm's liveness lease lives 3/4 of the TTL (main.ts), and the owners
 * of the intents in flight are polled every tenth of it between scans, and their intents taken
 * over as soon as their lease is gone (pollIntentOwners), so
 * the answer comes at most ~0.85 TTL after the death. A fork is rolled back (forkRollback:
 * its caller is told, definitely, that there is no child), or, if it had completed, its caller
 * gets the child's pid.
 *
 * Pending frames ({mem}:pending, keys.ts): a frame a fault or COW allocated and had not
 * installed when its incarnation died. Once that owner is confirmed dead (as for invalidations:
 * twice, a TTL apart), the owner is fenced off the frame's address space (pendingFence: its
 * fault scripts there are refused from then on, so a stopped replica that resumes cannot
 * install it) and the frame is put back if no PTE holds it, or, if one does, the put of the
 * page its COW replaced is done (pendingReap):
 *
 *   mm-0 (COW of pid 1, vpn 9: old 5 → new 7)     mm-1
 *   alloc 7 (pending: mm-0.a1|1|9|5:3)
 *   wpCopyLock: vpn 9 = 5:3:3 (cleared, old kept)
 *   SIGKILL
 *                                                 CPU fault at vpn 9: PT lock free, PTE
 *                                                 cleared by a dead COW → 5:3:0 again
 *                                                 (undone); then a COW of its own
 *                                                 mm-0.a1 dead twice: pendingFence(1, mm-0.a1)
 *                                                 → 7 in no PTE: pendingReap puts 7 back
 *
 * Batches of frames ({mem}:pending "…|reserve", page_alloc.ts PerCpuPages): a dead incarnation's
 * batch is given back once it is confirmed dead. mmMarkDead reads its index in the script that
 * marks it dead (invIndex refuses it from then on: it can install in no new pid), pcpFence
 * fences it off each indexed pid and reads there which batch frames its faults installed
 * ({p:<pid>}:rsv), and reserveReap keeps those and frees the rest (reapBatch below draws the
 * race with a replica stopped mid-fault).
 */
import {
  type HugeRecord,
  type Intent,
  type IsolationRecord,
  type OpenInvalidation,
  type PendingFrame,
  type ReplaceRecord,
  type SplitRecord,
  type UnmapRecord,
  hugeFence,
  hugePmds,
  hugeRecordEnd,
  ksmReplaceEnd,
  ptePresent,
} from '@mmlab/model';
import { MmlabError, PAGE_SIZE, type Prot, TASK_SIZE } from '@mmlab/protocol';
import type { MmContext } from './context';
import { forkRollback, traceForked } from './fork';
import { invalidateRangeEndForDead } from './mmu_notifier';
import { intentEnd, putCleared } from './intent';
import { exitSteps, madviseSteps, munmapSteps } from './mmap';
import { mprotectSteps } from './mprotect';
import { mremapSteps } from './mremap';
import { flushTlbRange } from './tlbflush';
import { hpageNr, splitMappings, traceFreed } from './huge_memory';

export class OrphanRangeReaper {
  private readonly deadSince = new Map<string, number>();
  private timer: NodeJS.Timeout | null = null;
  /** a scan in progress (scans never overlap) */
  private running: Promise<number> | null = null;
  /** invs this replica is finishing (a slow subscriber's end must not hold up the scans) */
  private readonly finishing = new Set<string>();
  /** intents this replica is taking over */
  private readonly finishingIntents = new Set<string>();
  /** pending frames this replica is reaping ("pfn:gen") */
  private readonly reaping = new Set<string>();
  /** the other incarnations with an index found alive at the last scan, polled between scans */
  private watched: string[] = [];
  private poller: NodeJS.Timeout | null = null;

  constructor(
    private readonly ctx: MmContext,
    private readonly log: { warn(msg: string): void },
  ) {}

  /**
   * Scan every half TTL (an owner is confirmed dead within about two TTLs of its lease's end);
   * between scans, poll the liveness of the other indexed incarnations every tenth of a TTL (one
   * MGET), and scan at once when one is gone (the caller of an operation it died in waits for
   * the answer; its intents are taken over at the first scan that finds its lease gone).
   */
  start(): void {
    const ttl = this.ctx.env.MMLAB_LEASE_TTL_MS;
    const scan = () => {
      if (this.running) return;
      void this.scan().catch((e: unknown) =>
        this.log.warn(`open invalidations not scanned: ${String(e)}`),
      );
    };
    this.timer = setInterval(scan, Math.max(50, Math.floor(ttl / 2)));
    this.poller = setInterval(
      () => {
        if (this.watched.length === 0 || this.running) return;
        void this.pollOwners().catch(() => undefined);
      },
      Math.max(10, Math.floor(ttl / 10)),
    );
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    if (this.poller) clearInterval(this.poller);
    this.timer = null;
    this.poller = null;
    await this.running?.catch(() => 0);
  }

  /**
   * Has an indexed incarnation alive at the last scan lost its liveness lease? Then scan at
   * once: its intents are taken over at the first scan that finds it gone (finishIntent claims
   * each and reads it again: one finished meanwhile is left alone).
   */
  private async pollOwners(): Promise<void> {
    const alive = await this.ctx.store.mmAliveMany(this.watched);
    if ([...alive.values()].some((a) => !a) && !this.running)
      await this.scan().catch((e: unknown) =>
        this.log.warn(`open invalidations not scanned: ${String(e)}`),
      );
  }

  /**
   * One pass over the index: → how many invalidations, intents and pending frames this replica
   * took over.
   */
  scan(): Promise<number> {
    this.running ??= this.scanOnce().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async scanOnce(): Promise<number> {
    const { store, incarnation, env } = this.ctx;
    const [indexed, tags] = await Promise.all([store.invOwners(), store.pendingAndReserve()]);
    const pending = tags.pending.filter(
      (f) => f.owner !== incarnation && !this.reaping.has(`${f.pfn}:${f.gen}`),
    );
    // reclaim's isolated batches (vmscan.ts): put back when their owner is dead; KSM's
    // replace_page in flight (ksm.ts): ended
    const isolated = tags.isolated.filter(
      (x) => x.owner !== incarnation && !this.reaping.has(`u:${x.rec}`),
    );
    const replacing = tags.replacing.filter(
      (x) => x.owner !== incarnation && !this.reaping.has(`u:${x.rec}`),
    );
    // a huge page allocated and not known installed, a split in flight (huge_memory.ts,
    // hugetlb.ts): ended, or finished
    const huge = tags.huge.filter(
      (x) => x.owner !== incarnation && !this.reaping.has(`u:${x.rec}`),
    );
    const splitting = tags.splitting.filter(
      (x) => x.owner !== incarnation && !this.reaping.has(`u:${x.rec}`),
    );
    // reclaim's try_to_unmap_one between its swap_duplicate and the put it owes (vmscan.ts)
    const unmapping = tags.unmapping.filter(
      (x) => x.owner !== incarnation && !this.reaping.has(`u:${x.rec}`),
    );
    // the incarnations (other than this one) that hold a batch of frames
    const batched = new Set(tags.reserve.map((f) => f.owner).filter((w) => w !== incarnation));
    const others = indexed.filter((w) => w !== incarnation);
    const owners = [
      ...new Set([
        ...others,
        ...pending.map((f) => f.owner),
        ...isolated.map((x) => x.owner),
        ...replacing.map((x) => x.owner),
        ...huge.map((x) => x.owner),
        ...splitting.map((x) => x.owner),
        ...unmapping.map((x) => x.owner),
        ...batched,
      ]),
    ];
    const alive = await store.mmAliveMany(owners);
    this.watched = others.filter((w) => alive.get(w));
    const t = Date.now();
    for (const w of [...this.deadSince.keys()])
      if (!owners.includes(w) || alive.get(w)) this.deadSince.delete(w);
    const dead = new Set<string>();
    for (const w of owners) {
      if (alive.get(w)) continue;
      const since = this.deadSince.get(w);
      if (since === undefined) this.deadSince.set(w, t);
      else if (t - since >= env.MMLAB_LEASE_TTL_MS) dead.add(w);
    }
    // Only the pids of the incarnations whose lease is gone are read.
    const gone = others.filter((w) => alive.get(w) === false);
    // A dead incarnation with a batch and no index installed none of it anywhere: reaped too.
    const unindexed = [...batched].filter((w) => dead.has(w) && !others.includes(w));
    const taken = await Promise.all([
      ...gone.map((w) => this.reapIndexed(w, dead.has(w), batched.has(w))),
      ...unindexed.map((w) => this.reapIndexed(w, true, true)),
    ]);
    const reaped = pending.filter((f) => dead.has(f.owner));
    for (const f of reaped) void this.reapPending(f);
    const unisolated = isolated.filter((x) => dead.has(x.owner));
    for (const x of unisolated) void this.reapIsolated(x);
    const replaced = replacing.filter((x) => dead.has(x.owner));
    for (const x of replaced) void this.reapReplace(x);
    const hugeEnded = huge.filter((x) => dead.has(x.owner));
    for (const x of hugeEnded) void this.reapHuge(x);
    const splits = splitting.filter((x) => dead.has(x.owner));
    for (const x of splits) void this.reapSplit(x);
    const unmapped = unmapping.filter((x) => dead.has(x.owner));
    for (const x of unmapped) void this.reapUnmap(x);
    return (
      taken.reduce((a, b) => a + b, 0) +
      reaped.length +
      unisolated.length +
      replaced.length +
      hugeEnded.length +
      splits.length +
      unmapped.length
    );
  }

  /**
   * A dead owner's try_to_unmap_one (vmscan.ts), between its swap_duplicate and the put it owes:
   * the owner fenced off the process first, then its PTE step's mark read (unmapFence; no mark:
   * the PTE) — not done: the duplicate's swap_free (the unmap never happened); done: the page's
   * mapping put (rolled forward). The isolation is the isolation record's.
   */
  private async reapUnmap(x: UnmapRecord): Promise<void> {
    const { ctx } = this;
    const key = `u:${x.rec}`;
    this.reaping.add(key);
    try {
      const mapped = await ctx.store.unmapFence(x.pid, x.rec, x.owner, x.vpn, x.page);
      const freed = await ctx.store.unmapRecordEnd(x.rec, x.owner, !mapped);
      if (freed === null) return;
      const op = ctx.ids.next('reap');
      for (const pfn of freed)
        if (pfn === x.page.pfn) ctx.tracer.emit({ kind: 'frame.free', op, ...x.page });
      this.log.warn(
        `try_to_unmap_one of pid ${x.pid} vpn ${x.vpn} by dead ${x.owner}: ` +
          (mapped ? 'not unmapped, the swap duplicate given back' : 'unmapped, the page put'),
      );
    } catch (e) {
      this.log.warn(`try_to_unmap_one ${x.rec} of dead ${x.owner} not ended: ${String(e)}`);
    } finally {
      this.reaping.delete(key);
    }
  }

  /**
   * A dead owner's huge record (huge_memory.ts, hugetlb.ts: a huge page allocated for a fault, a
   * COW or a collapse, between its allocation and the end of its install): the owner fenced off
   * the process first (a stopped one that resumes installs nothing there), then the entry read
   * (hugeFence) — mapping the new page: the olds' puts it owed (rolled forward); else the new
   * page's put (rolled back: a cleared entry or cleared small PTEs are put back by the next
   * fault).
   */
  private async reapHuge(x: HugeRecord): Promise<void> {
    const { ctx } = this;
    const key = `u:${x.rec}`;
    this.reaping.add(key);
    try {
      const installed = await hugeFence(ctx.store, x.pid, {
        owner: x.owner,
        pool: x.pool,
        hvpn: x.hvpn,
        page: x.page,
        pages: hpageNr(ctx),
      });
      const r = await hugeRecordEnd(ctx.store, x.rec, x.owner, installed);
      if (!r) return;
      const op = ctx.ids.next('reap');
      traceFreed(ctx, op, r.freed, r.installed ? x.olds : [x.page]);
      this.log.warn(
        `${x.pool} page ${x.page.pfn} of pid ${x.pid} at vpn ${x.hvpn} by dead ${x.owner}: ` +
          (r.installed ? 'installed, the pages it replaced put' : 'never installed, put back'),
      );
    } catch (e) {
      this.log.warn(`huge record ${x.rec} of dead ${x.owner} not ended: ${String(e)}`);
    } finally {
      this.reaping.delete(key);
    }
  }

  /**
   * A dead owner's split_huge_page (huge_memory.ts): rolled forward — the owner fenced off the
   * process it split for and every process that still maps the page huge (its lock and set
   * scripts there are refused from then on), then every mapping still huge is split and the
   * compound page dissolved, with the record's end.
   */
  private async reapSplit(x: SplitRecord): Promise<void> {
    const { ctx } = this;
    const key = `u:${x.rec}`;
    this.reaping.add(key);
    try {
      const pids = new Set([x.pid]);
      for (const pid of await ctx.store.processes())
        if (
          (await hugePmds(ctx.store, pid)).entries.some(
            (e) => e.pfn === x.head.pfn && e.gen === x.head.gen,
          )
        )
          pids.add(pid);
      await Promise.all([...pids].map((pid) => ctx.store.invFence(pid, x.owner)));
      const op = ctx.ids.next('thp.split');
      const n = await splitMappings(ctx, op, x.head, { rec: x.rec, owner: x.owner });
      this.log.warn(
        `split of huge page ${x.head.pfn} by dead ${x.owner}: finished (${n} more mappings split)`,
      );
    } catch (e) {
      this.log.warn(`split ${x.rec} of dead ${x.owner} not finished: ${String(e)}`);
    } finally {
      this.reaping.delete(key);
    }
  }

  /**
   * KSM's replace_page of a dead owner, between its get_page(kpage) and the put it owes
   * (ksm.ts): the owner fenced off the process first (a stopped one that resumes writes no PTE
   * there), then the PTE read — mapping kpage: put_page(page), the merge done (rolled forward);
   * else (still cleared, put back by a fault, or gone): kpage's mapping back (rolled back).
   */
  private async reapReplace(x: ReplaceRecord): Promise<void> {
    const { ctx } = this;
    const key = `u:${x.rec}`;
    this.reaping.add(key);
    try {
      await ctx.store.pendingFence({
        ...x.kpage,
        owner: x.owner,
        pid: x.pid,
        vpn: x.vpn,
        old: null,
      });
      const pte = (await ctx.store.pageTable(x.pid)).get(x.vpn);
      const installed =
        pte !== undefined && ptePresent(pte) && pte.pfn === x.kpage.pfn && pte.gen === x.kpage.gen;
      const freed = await ksmReplaceEnd(ctx.store, x.rec, x.owner, installed);
      if (freed === null) return;
      const op = ctx.ids.next('reap');
      const put = installed ? x.page : x.kpage;
      for (const pfn of freed)
        if (pfn === put.pfn) ctx.tracer.emit({ kind: 'frame.free', op, ...put });
      this.log.warn(
        `replace_page of pid ${x.pid} vpn ${x.vpn} by dead ${x.owner}: ` +
          (installed ? 'merged, the old page put' : 'not merged, the KSM page put back'),
      );
    } catch (e) {
      this.log.warn(`replace_page ${x.rec} of dead ${x.owner} not ended: ${String(e)}`);
    } finally {
      this.reaping.delete(key);
    }
  }

  /**
   * A batch reclaim isolated (vmscan.ts: {mem}:pending u:<rec>) whose owner died before it put
   * every page back: what is still isolated goes back on the LRU (isolatedReap), in the state the
   * dead one's shrink_page_list left it — in the swap cache or not, its mappings swap entries or
   * not: each of those steps is whole. Its owner, were it only stopped, finds the record gone
   * when it resumes and puts nothing back a second time.
   */
  private async reapIsolated(x: IsolationRecord): Promise<void> {
    const { ctx } = this;
    const key = `u:${x.rec}`;
    this.reaping.add(key);
    try {
      const r = await ctx.store.isolatedReap(x.rec, x.owner);
      const op = ctx.ids.next('reap');
      for (const f of r.freed) ctx.tracer.emit({ kind: 'frame.free', op, ...f });
      if (r.back > 0)
        this.log.warn(`${r.back} pages reclaim isolated for dead ${x.owner}: put back on the LRU`);
    } catch (e) {
      this.log.warn(`isolated batch ${x.rec} of dead ${x.owner} not put back: ${String(e)}`);
    } finally {
      this.reaping.delete(key);
    }
  }

  /**
   * The pids indexed for incarnation w, whose lease is gone: take its intents over (at once),
   * and, once it is confirmed dead, fence it off each pid, finish its open invalidations there
   * and drop the pid from its index when it owns nothing there any more (a later scan, once
   * they are finished). → how many it took over.
   */
  private async reapIndexed(w: string, confirmed: boolean, batched: boolean): Promise<number> {
    const { store } = this.ctx;
    // Confirmed dead: marked so in the same script that reads its index (no pid can be added
    // to it from then on), then fenced off each pid. Fenced first, read after: what is read is
    // all w will ever own, or have installed of its batch, on pid.
    const pids = confirmed ? await store.mmMarkDead(w) : await store.invPids(w);
    if (confirmed) {
      const fenced = await Promise.all(pids.map((pid) => store.pcpFence(pid, w)));
      try {
        await this.reapBatch(
          w,
          pids,
          fenced.map((f) => f.installed),
          batched,
        );
      } catch (e) {
        this.log.warn(`the batch of dead ${w} not given back: ${String(e)}`);
        return 0;
      }
    }
    const per = await Promise.all(
      pids.map(async (pid) => {
        const [open, intents] = await Promise.all([
          store.openInvalidations(pid),
          store.intents(pid),
        ]);
        const invs = open.filter((o) => o.owner === w);
        const its = intents.filter((i) => i.owner === w);
        let n = 0;
        for (const i of its)
          if (!this.finishingIntents.has(i.id)) {
            void this.finishIntent(i);
            n++;
          }
        if (!confirmed) return n;
        for (const o of invs)
          if (!this.finishing.has(o.inv)) {
            void this.finish(o);
            n++;
          }
        if (invs.length === 0 && its.length === 0) await store.invUnindex(w, pid);
        return n;
      }),
    );
    return per.reduce((a, b) => a + b, 0);
  }

  /**
   * The batch of frames of a dead incarnation w (page_alloc.ts, PerCpuPages), w fenced off every
   * pid of its index and marked dead (no new pid) already; installed[i]: the frames of its
   * batch its faults installed in pids[i] ({p:<pid>}:rsv). One {mem} script keeps the installed
   * ones (their tags go) and frees the rest; only then are the :rsv records forgotten (read
   * again by whoever reaps w, should this replica die in between). No trace: a frame of a batch
   * is traced (frame.alloc) when a fault installs it, and only those are ever traced freed.
   *
   * The race the fences close — a replica stopped mid-fault, past its lease:
   *
   *   mm-0 (incarnation a1, fault of pid 7)       mm-1 (reaper)
   *   take pfn 9 from its batch (no call)
   *   invIndex(a1, 7) (cached: once per pid)
   *   ... SIGSTOP, past its lease (twice) ...
   *                                               mmMarkDead(a1) → index {7}; a1 indexes nothing
   *                                               from now on
   *                                               pcpFence(7, a1): a1 fenced off pid 7; its :rsv
   *                                               there: pfn 9 is not in it
   *                                               reserveReap(a1): 9 freed (never installed)
   *   SIGCONT: fault script (pid 7, pfn 9, a1)
   *     → FENCED: nothing installed; ESTALE,
   *     serves on as a new incarnation
   *
   * Had mm-0 stopped before its invIndex(a1, 7), that invIndex is refused (a1 is in {mm}:dead)
   * and it sends no fault script; had its fault script run before the fence, pcpFence reads the
   * install in :rsv and reserveReap keeps the frame.
   */
  private async reapBatch(
    w: string,
    pids: readonly number[],
    installed: ReadonlyArray<ReadonlyArray<{ pfn: number; gen: number }>>,
    batched: boolean,
  ): Promise<void> {
    const { store } = this.ctx;
    const all = installed.flat();
    if (!batched && all.length === 0) return;
    const r = await store.reserveReap(w, all);
    if (r.kept + r.freed.length > 0)
      this.log.warn(
        `the batch of dead ${w}: ${r.freed.length} frames never installed freed, ${r.kept} installed kept`,
      );
    await Promise.all(
      pids.filter((_, i) => installed[i].length > 0).map((pid) => store.reserveForget(pid, w)),
    );
  }

  /**
   * A dead incarnation's pending frame: fence the owner off the frame's address space, then put
   * the frame back if no PTE holds it, or do the put its COW owed if one does.
   */
  private async reapPending(f: PendingFrame): Promise<void> {
    const { ctx } = this;
    const key = `${f.pfn}:${f.gen}`;
    this.reaping.add(key);
    try {
      const installed = await ctx.store.pendingFence(f);
      const r = await ctx.store.pendingReap(f, installed);
      if (r.r === 'GONE') return;
      const op = ctx.ids.next('reap');
      const gens = new Map([[f.pfn, f.gen], ...(f.old ? ([[f.old.pfn, f.old.gen]] as const) : [])]);
      for (const pfn of r.freed) {
        const gen = gens.get(pfn); // (a swap-in's owed swap_free frees no frame: it is mapped)
        if (gen !== undefined) ctx.tracer.emit({ kind: 'frame.free', op, pfn, gen });
      }
      this.log.warn(
        `pfn ${f.pfn} of pid ${f.pid} pending for dead ${f.owner}: ` +
          (r.r === 'BACK' ? 'never installed, freed' : 'installed, its COW finished'),
      );
    } catch (e) {
      this.log.warn(`pending pfn ${f.pfn} of dead ${f.owner} not reaped: ${String(e)}`);
    } finally {
      this.reaping.delete(key);
    }
  }

  /**
   * Take over the operation a dead incarnation left half done (intent.ts): answer its caller,
   * put the frames it cleared and never put (after a TLB shootdown of its range: it may have
   * died before its own), and run the operation again from the top under the same record.
   * munmap, mprotect, mremap, madvise(DONTNEED) and exit are idempotent given their record, so
   * this rolls them forward.
   */
  private async finishIntent(i: Intent): Promise<void> {
    const { ctx } = this;
    this.finishingIntents.add(i.id);
    try {
      const claim = await ctx.store.intentClaim(i.pid, i.id, i.owner, ctx.incarnation);
      if (claim.r !== 'OK') return;
      // Read it again: only now can the dead (or stopped) owner add nothing more to it.
      const cur = (await ctx.store.intents(i.pid)).find((x) => x.id === i.id);
      if (!cur) return;
      this.log.warn(`taking over ${cur.rec.syscall} ${i.id} of pid ${i.pid} from dead ${i.owner}`);
      if (cur.rec.syscall === 'fork') return await this.rollBackFork(cur, i.owner);
      if (cur.rec.reply)
        ctx.rpc.nc.publish(
          cur.rec.reply.to,
          JSON.stringify({
            id: cur.rec.reply.id,
            err: new MmlabError(
              'EOWNERDEAD',
              `${i.owner} died during ${cur.rec.syscall} of pid ${i.pid}; ${ctx.instance} finishes it`,
            ).toWire(),
            isDisposed: true,
          }),
        );
      const op = ctx.ids.next(cur.rec.syscall);
      ctx.intents.set(op, {
        pid: i.pid,
        id: i.id,
        owner: ctx.incarnation,
        batch: cur.batch,
        chunks: 0,
      });
      const a = cur.rec.args as { addr: number; pages: number; newPages?: number; prot?: Prot };
      const s = a.addr / PAGE_SIZE;
      try {
        // The dead one may have changed PTEs and died before its shootdown (a writable entry
        // left behind by mprotect, an old address by mremap, a frame by munmap): shoot the
        // whole range down first, then put what it cleared.
        const cpus = await ctx.store.cpumask(i.pid);
        const [from, to] =
          cur.rec.syscall === 'exit' ? [0, TASK_SIZE] : [a.addr, a.addr + a.pages * PAGE_SIZE];
        await flushTlbRange(ctx, op, i.pid, from, to, cpus);
        if (cur.cleared.length) await putCleared(ctx, op, cur.cleared);
        // Contention past the deadline (EAGAIN) changes nothing: try again, a few times.
        for (let attempt = 1; ; attempt++) {
          try {
            const it = (await ctx.store.intents(i.pid)).find((x) => x.id === i.id);
            switch (cur.rec.syscall) {
              case 'munmap':
                await munmapSteps(ctx, op, i.pid, s, a.pages);
                break;
              case 'mprotect':
                await mprotectSteps(ctx, op, i.pid, s, a.pages, a.prot!);
                break;
              case 'mremap':
                await mremapSteps(ctx, op, i.pid, s, a.pages, a.newPages ?? a.pages, it?.newVpn);
                break;
              case 'madvise':
                await madviseSteps(ctx, op, i.pid, s, a.pages);
                break;
              case 'exit':
                await exitSteps(ctx, op, i.pid).catch((e: unknown) => {
                  // ended already (ESRCH): nothing left to do
                  if (!(e instanceof MmlabError && e.code === 'ESRCH')) throw e;
                });
                break;
            }
            break;
          } catch (e) {
            if (!(e instanceof MmlabError && e.code === 'EAGAIN') || attempt >= 5) throw e;
            this.log.warn(`${i.id} of pid ${i.pid}: ${e.message}; again`);
          }
        }
      } finally {
        await intentEnd(ctx, op);
      }
    } catch (e) {
      this.log.warn(`${i.id} of pid ${i.pid} not finished: ${String(e)}`);
    } finally {
      this.finishingIntents.delete(i.id);
    }
  }

  /**
   * A fork its replica died in: roll it back (forkRollback) and tell its caller there is no
   * child (EOWNERDEAD, definite); or, if the child had come alive, give the caller its pid.
   */
  private async rollBackFork(cur: Intent, dead: string): Promise<void> {
    const { ctx } = this;
    const op = ctx.ids.next('fork');
    const child = Number(cur.rec.args.child);
    // chunks: 0 — the undone get_page batches stay marked, refusing a late get of the dead one
    ctx.intents.set(op, { pid: cur.pid, id: cur.id, owner: ctx.incarnation, batch: 0, chunks: 0 });
    try {
      // The dead one may have write-protected PTEs of the parent and died before its shootdown.
      const cpus = await ctx.store.cpumask(cur.pid);
      for (const v of await ctx.store.vmas(cur.pid))
        await flushTlbRange(ctx, op, cur.pid, v.start * PAGE_SIZE, v.end * PAGE_SIZE, cpus);
      const r = await forkRollback(ctx, op, child, cur.id, cur.chunks);
      if (r === 'ALIVE') traceForked(ctx, op, cur.pid, child, await ctx.store.vmas(child));
      if (cur.rec.reply)
        ctx.rpc.nc.publish(
          cur.rec.reply.to,
          JSON.stringify({
            id: cur.rec.reply.id,
            isDisposed: true,
            ...(r === 'ALIVE'
              ? { response: { pid: child } }
              : {
                  err: new MmlabError(
                    'EOWNERDEAD',
                    `${dead} died during fork of pid ${cur.pid}; ${ctx.instance} rolled it back: no child`,
                    true,
                  ).toWire(),
                }),
          }),
        );
    } finally {
      await intentEnd(ctx, op);
    }
  }

  private async finish(o: OpenInvalidation): Promise<void> {
    this.finishing.add(o.inv);
    try {
      await invalidateRangeEndForDead(this.ctx, o);
    } catch (e) {
      this.log.warn(`invalidate_range_end of inv ${o.inv} for dead ${o.owner}: ${String(e)}`);
    } finally {
      this.finishing.delete(o.inv);
    }
  }
}
