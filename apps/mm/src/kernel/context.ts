/** What the mm code of one replica works with: its Redis state, NATS peers, tracer, config. */
import { randomBytes } from 'node:crypto';
import type { Env, RpcClient, Tracer } from '@mmlab/runtime';
import { OpIds, sleep } from '@mmlab/runtime';
import type { Store } from '@mmlab/model';
import { type CrashAction, MmlabError, PAGE_SIZE, TASK_SIZE, isPageAligned } from '@mmlab/protocol';
import { PerCpuPages } from './page_alloc';

export interface MmContext {
  readonly env: Env;
  readonly instance: string;
  /**
   * This process: <instance>.<boot id>. A restarted replica keeps its instance name but is a new
   * incarnation; the invalidations it owes ends for, and its liveness lease ({mm}:live:<it>),
   * are keyed by it, so a dead incarnation's are never mistaken for the live one's.
   */
  incarnation: string;
  readonly store: Store;
  readonly tracer: Tracer;
  readonly rpc: RpcClient;
  readonly ids: OpIds;
  /** Debug: the next PT-lock section sleeps this long while holding the lock (0: off). */
  stallUnderPtlMs: number;
  /**
   * The atomic-context record: op → the PT lock it holds right now (in_atomic() for that
   * "task"). Set when a PT lock is granted, cleared at its release; the notifier dispatcher
   * reads it to catch a callback sent under a spinlock (might_sleep).
   */
  readonly atomic: Map<string, string>;
  /**
   * The range invalidations this process recorded (invOpen) and has not closed: their end is
   * still owed by this incarnation. A clean shutdown waits for it to empty before NATS goes.
   */
  readonly openRanges: Set<string>;
  /** Shutting down, past the wait for openRanges: a new invalidate_range_start is refused. */
  closing: boolean;
  /**
   * op → the intent record of the multi-step operation it runs (intent.ts): its PT locks are
   * asked for that operation (refused once another replica took it over), and the frames its
   * zaps clear are recorded there.
   */
  readonly intents: Map<string, OpIntent>;
  /**
   * This incarnation's batch of frames (per_cpu_pages, page_alloc.ts): where a write fault on
   * an untouched page takes its frame without a Redis call.
   */
  readonly pcp: PerCpuPages;
  /** The crash point armed on this replica (crash_point.ts), if any. */
  crash: { point: string; token: string; action: CrashAction } | null;
  /**
   * Called when a script found this incarnation fenced off an address space (it was taken for
   * dead): main.ts starts a new incarnation, so that the replica serves again.
   */
  onFenced?: () => void;
}

/** An operation's intent record, as the replica running it holds it. */
export interface OpIntent {
  readonly pid: number;
  /** "<incarnation>/<op>" of the operation's first runner */
  readonly id: string;
  /** this incarnation: the owner the scripts check */
  readonly owner: string;
  /** the batch the next put of cleared frames is (intentFlushed moves it on) */
  batch: number;
  /** fork: how many chunks of the child's frames were recorded (get_page batches <id>#c<n>) */
  chunks: number;
}

export function createContext(
  deps: Omit<
    MmContext,
    | 'ids'
    | 'stallUnderPtlMs'
    | 'atomic'
    | 'incarnation'
    | 'openRanges'
    | 'closing'
    | 'intents'
    | 'crash'
    | 'pcp'
  >,
): MmContext {
  return {
    ...deps,
    incarnation: newIncarnation(deps.instance),
    ids: new OpIds(deps.instance),
    stallUnderPtlMs: 0,
    atomic: new Map(),
    openRanges: new Set(),
    closing: false,
    intents: new Map(),
    crash: null,
    pcp: new PerCpuPages(),
  };
}

/** A new incarnation of replica instance: "<instance>.<boot id>". */
export const newIncarnation = (instance: string): string =>
  `${instance}.${randomBytes(4).toString('hex')}`;

/**
 * The owner recorded in a PT-lock or mmap_sem lease and sent with each callback:
 * "<incarnation>/<op>", so that whoever finds a lease (a subscriber's ptlHeldBy, mmlab fsck) can
 * tell whether its holder is still alive ({mm}:live:<incarnation>).
 */
export const ownerOf = (ctx: Pick<MmContext, 'incarnation'>, op: string): string =>
  `${ctx.incarnation}/${op}`;

export const injected = (ctx: MmContext, mode: Env['MMLAB_INJECT'][number]): boolean =>
  ctx.env.MMLAB_INJECT.includes(mode);

/**
 * Back off while someone else holds what we need. The first retries only yield (a spinning
 * CPU), later ones sleep up to 5 ms; past the deadline the operation fails with EAGAIN and has
 * changed nothing.
 */
export async function backoff(attempt: number, deadline: number, what: string): Promise<void> {
  if (Date.now() > deadline)
    throw new MmlabError('EAGAIN', `${what} still contended at the deadline`);
  if (attempt < 4) await new Promise((r) => setImmediate(r));
  else await sleep(Math.min(5, attempt - 3));
}

/**
 * The first page of a range a syscall was given: EINVAL unless addr is page aligned and, with
 * pages, the range ends at or below TASK_SIZE (do_munmap: `len > TASK_SIZE - start`; nothing is
 * locked or changed for a range no process can map).
 */
export function startVpn(addr: number, syscall: string, pages?: number): number {
  if (!isPageAligned(addr))
    throw new MmlabError('EINVAL', `${syscall} address 0x${addr.toString(16)} is not page aligned`);
  if (pages !== undefined && addr + pages * PAGE_SIZE > TASK_SIZE)
    throw new MmlabError(
      'EINVAL',
      `${syscall} range 0x${addr.toString(16)} + ${pages} pages ends past TASK_SIZE (0x${TASK_SIZE.toString(16)})`,
    );
  return addr / PAGE_SIZE;
}
