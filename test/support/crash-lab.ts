/**
 * The lab of the crash-point tests (test/mm-crash-points.e2e-spec.ts, test/mm-crash-fork-cow.e2e-spec.ts): three mm replicas (lease
 * TTL 600 ms), one CPU and hca0 with an ODP MR over each test's range (each invalidation takes
 * the device 100 ms). A crash point is armed on the replicas that are up: the first to reach it
 * dies there with SIGKILL (or stops, SIGSTOP); a dead one is restarted while its case settles
 * (a replica's start is the slowest part of a case).
 */
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, expect } from 'vitest';
import { MmlabError, PAGE_SIZE } from '@mmlab/protocol';
import { type Store, crashKey } from '@mmlab/model';
import type { RpcClient } from '@mmlab/runtime';
import type { LabConfig, LocalLab } from '@mmlab/runner';
import { type TestLab, type TraceLog, startTestLab, until } from '@mmlab/testing';

export const LEASE_TTL_MS = 600;
export const codeOfError = (e: unknown): string => (e instanceof MmlabError ? e.code : String(e));
const MMS = ['mm-0', 'mm-1', 'mm-2'];
export const HCA = 'hca0';

/** Every crash point of each syscall, in the order the syscall reaches them. */
export const POINTS = {
  munmap: [
    'munmap.intent',
    'munmap.vma_unmapped',
    'munmap.range_started',
    'munmap.zapped',
    'munmap.flushed',
    'munmap.freed',
    'munmap.range_ended',
  ],
  mprotect: [
    'mprotect.intent',
    'mprotect.vma_protected',
    'mprotect.range_started',
    'mprotect.changed',
    'mprotect.range_ended',
  ],
  // a shrink: the tail is zapped (munmap's steps) before the VMA moves
  mremap: [
    'mremap.intent',
    'mremap.range_started',
    'mremap.zapped',
    'mremap.flushed',
    'mremap.freed',
    'mremap.vma_moved',
    'mremap.move_started',
    'mremap.moved',
    'mremap.range_ended',
  ],
  madvise: [
    'madvise.intent',
    'madvise.range_started',
    'madvise.zapped',
    'madvise.flushed',
    'madvise.freed',
  ],
  exit: ['exit.intent', 'exit.begun', 'exit.released', 'exit.zapped', 'exit.freed', 'exit.ended'],
  fork: [
    'fork.intent',
    'fork.child_created',
    'fork.range_started',
    'fork.copied',
    'fork.referenced',
    'fork.child_set',
    'fork.range_ended',
    'fork.child_alive',
  ],
  // do_wp_page's copy of a page shared with a child
  cow: [
    'do_wp_page.copied',
    'do_wp_page.range_started',
    'do_wp_page.ptl_held',
    'do_wp_page.set',
    'do_wp_page.range_ended',
    'do_wp_page.freed',
  ],
  // issue 15: reclaim of an anonymous page to swap (shrink_page_list, try_to_unmap_one)
  reclaim: [
    'shrink_page_list.isolated',
    'shrink_page_list.swap_added',
    'try_to_unmap_one.duplicated',
    'try_to_unmap_one.cleared',
    'try_to_unmap_one.unlocked',
    'shrink_page_list.unmapped',
  ],
  swapin: ['do_swap_page.read', 'do_swap_page.installed'],
  // one ksmd pass over four pages of one content: the first becomes the KSM page, the others
  // are replaced by it
  ksm: [
    'write_protect_page.range_started',
    'write_protect_page.cleared',
    'write_protect_page.range_ended',
    'try_to_merge_two_pages.stable',
    'replace_page.range_started',
    'replace_page.kpage_got',
    'replace_page.set',
    'replace_page.range_ended',
  ],
  // KVM's guest fault (apps/kvm tdp_page_fault.ts: MMLAB_KVM_CRASH_POINT, not mmCrashPoint)
  kvm: ['tdp_page_fault.gup', 'tdp_page_fault.retry_checked', 'tdp_page_fault.installed'],
  thpFault: ['do_huge_pmd_anonymous_page.allocated'],
  thpCow: [
    'do_huge_pmd_wp_page.allocated',
    'do_huge_pmd_wp_page.range_started',
    'do_huge_pmd_wp_page.ptl_held',
    'do_huge_pmd_wp_page.set',
    'do_huge_pmd_wp_page.range_ended',
  ],
  // no huge page free for the COW: small copies (test/mm-crash-huge fragments memory first)
  thpCowFallback: [
    'do_huge_pmd_wp_page_fallback.allocated',
    'do_huge_pmd_wp_page_fallback.range_started',
    'do_huge_pmd_wp_page_fallback.ptl_held',
    'do_huge_pmd_wp_page_fallback.set',
    'do_huge_pmd_wp_page_fallback.range_ended',
  ],
  thpSplit: [
    '__split_huge_page_splitting.range_started',
    '__split_huge_page_splitting.ptl_held',
    '__split_huge_page_splitting.set',
    '__split_huge_page_splitting.range_ended',
    'split_huge_page.mapped',
  ],
  thpCollapse: [
    'collapse_huge_page.allocated',
    'collapse_huge_page.range_started',
    'collapse_huge_page.ptl_held',
    'collapse_huge_page.set',
    'collapse_huge_page.range_ended',
  ],
  // munmap of a whole huge entry (inside munmap's intent)
  thpZap: ['zap_huge_pmd.cleared', 'zap_huge_pmd.flushed'],
  hugetlbFault: ['hugetlb_no_page.allocated', 'hugetlb_no_page.set'],
  hugetlbCow: [
    'hugetlb_cow.allocated',
    'hugetlb_cow.range_started',
    'hugetlb_cow.cleared',
    'hugetlb_cow.set',
    'hugetlb_cow.range_ended',
  ],
  hugetlbUnmap: [
    '__unmap_hugepage_range.range_started',
    '__unmap_hugepage_range.cleared',
    '__unmap_hugepage_range.range_ended',
  ],
  // a write fault's frame (test/mm-crash-points.e2e-spec.ts, by name)
  anon: ['do_anonymous_page.taken', 'do_anonymous_page.installed'],
} as const;

/**
 * The crash points whose death still leaks (issue 15, left to do): what fsck reports after it.
 * Their cases are skipped (a leak left in the lab would fail every case after it).
 */
export const KNOWN_LEAKS: Record<string, string> = {};

/** Every crash point of the tables above. */
export const ALL_POINTS: readonly string[] = Object.values(POINTS).flat();

/**
 * The crash points the code has (git grep of crashPoint( and kvmCrashPoint( in apps/): the
 * literal names, and the steps of the templated ones (`${site}.range_started`, `${syscall}.intent`)
 * as '*.<step>'.
 */
export function crashPointsInCode(root: string): { literal: string[]; templated: string[] } {
  const out = execFileSync(
    'git',
    ['grep', '-h', '-o', '-E', "(crashPoint|kvmCrashPoint)\\(ctx, [`'][^`']+[`']", '--', 'apps'],
    { cwd: root, encoding: 'utf8' },
  );
  const literal = new Set<string>();
  const templated = new Set<string>();
  for (const line of out.split('\n')) {
    const m = /\(ctx, [`']([^`']+)[`']/.exec(line);
    if (!m) continue;
    if (m[1].includes('${')) templated.add(`*${m[1].slice(m[1].lastIndexOf('.'))}`);
    else if (/^[a-z_]+\.[a-z_]+$/.test(m[1])) literal.add(m[1]); // (not a comment's <syscall>.<step>)
  }
  return { literal: [...literal].sort(), templated: [...templated].sort() };
}

/**
 * Start the lab for the calling describe block (beforeAll), stop it after (afterAll). extra: more
 * of the lab's config (swap, THP, a hugetlb pool, a KVM subscriber: test/mm-crash-mm-paths and
 * mm-crash-huge), over the defaults below.
 */
export function useCrashLab(frames: number, extra: Partial<LabConfig> = {}) {
  let t: TestLab | undefined;
  let lab: LocalLab;
  let rpc: RpcClient;
  let store: Store;
  let trace: TraceLog;
  /** how long each caller waited for its answer after the death (ms), by point */
  const answeredAfter: Record<string, number> = {};

  beforeAll(async () => {
    t = await startTestLab(
      {
        mode: 'patched',
        frames, // the cases leave their processes
        cpus: 1,
        mmReplicas: 3,
        leaseTtlMs: LEASE_TTL_MS,
        observer: false,
        subscribers: [{ name: HCA, kind: 'hca', invalidateLatencyMs: 100 }],
        ...extra,
      },
      { rpcTimeoutMs: 20_000 },
    );
    ({ lab, rpc, store, trace } = t);
  });
  afterAll(async () => {
    await restarting.catch(() => undefined);
    console.log(`caller answered after the death (ms): ${JSON.stringify(answeredAfter)}`);
    await t?.stop();
  });

  /** 4 pages written by cpu0 (values 10..13) and mapped by hca0 through an ODP MR. */
  async function space() {
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 4, prot: 'rw' });
    const page = (i: number) => addr + i * PAGE_SIZE;
    for (let i = 0; i < 4; i++)
      await rpc.call('cpuAccess', { pid, addr: page(i), op: 'write', value: 10 + i }, { id: 0 });
    const { mr } = await rpc.call(
      'hcaRegMr',
      { pid, addr, pages: 4, odp: true, access: ['read', 'write'] },
      { id: HCA },
    );
    for (let i = 0; i < 4; i++) await rpc.call('hcaRdmaRead', { mr, addr: page(i) }, { id: HCA });
    return { pid, addr, page, mr };
  }

  /**
   * The replicas serving (not dead, not being restarted). A dead one is restarted while the next
   * cases run while the last case settles (a replica's start is the slowest part of a case).
   */
  const up = new Set(MMS);
  let restarting: Promise<void> = Promise.resolve();

  let n = 0;
  /** Arm point on the replicas up (one fires), run call; → its outcome and who died when. */
  async function dieAt<T>(point: string, call: () => Promise<T>, action: 'kill' | 'stop' = 'kill') {
    // A restarting replica joins the queue group before its start returns: it must be armed
    // too, so wait for it (it restarted while the last case settled).
    await restarting;
    const armed = [...up];
    const token = `${point}#${++n}`;
    for (const m of armed) await rpc.call('mmCrashPoint', { point, token, action }, { id: m });
    const outcome = await call().then(
      (value) => ({ value, code: null as string | null, at: Date.now() }),
      async (e: unknown) => ({
        value: null,
        code: codeOfError(e),
        at: Date.now(),
      }),
    );
    const fired = await store.redis.get(crashKey(token));
    expect(fired, `crash point ${point} was reached`).not.toBeNull();
    const [dead, when] = fired!.split('|');
    up.delete(dead);
    for (const m of armed)
      if (m !== dead) await rpc.call('mmCrashPoint', { point: '', token, action }, { id: m });
    return { outcome, dead, diedAt: Number(when) };
  }

  /** After the take-over: nothing for fsck to find; then the dead replica comes back. */
  async function afterDeath(
    point: string,
    d: { dead: string; diedAt: number; outcome: { at: number } },
    /** findings there before the case (test/mm-crash-huge: left by a known leak) */
    before: readonly string[] = [],
  ) {
    answeredAfter[point] = d.outcome.at - d.diedAt;
    // the dead replica comes back (a new incarnation) while this case settles
    restarting = restarting.then(async () => {
      await lab.start(d.dead);
      up.add(d.dead);
    });
    // EOWNERDEAD is sent when the taker starts: wait for it to finish (no intent left) before
    // looking at the effect
    await until(
      async () =>
        (await Promise.all((await store.processes()).map((p) => store.intents(p)))).every(
          (i) => i.length === 0,
        ),
      'the operation taken over finished',
    );
    const r = await t!.fsck(4 * LEASE_TTL_MS);
    expect(
      r.findings.map((f) => `${f.code} ${f.message}`).filter((f) => !before.includes(f)),
    ).toEqual([]);
  }

  return {
    get t() {
      return t!;
    },
    get lab() {
      return lab;
    },
    get rpc() {
      return rpc;
    },
    get store() {
      return store;
    },
    get trace() {
      return trace;
    },
    answeredAfter,
    up,
    space,
    dieAt,
    afterDeath,
  };
}
