/**
 * Intent records: how a multi-step change (munmap, mprotect, mremap, fork) survives the death of the
 * replica running it. Models nothing in the kernel, where the CPU running munmap cannot die
 * half way without taking the machine down. In mmlab the replica is a process that can die at
 * any step, so each such operation is recorded in Redis ({p:<pid>}:intent:<id>, keys.ts) before
 * its first change and forgotten after its last; the steps that matter write into the record
 * in the same script as their change (zapPteRange: the frames it cleared; vmaMove: where the
 * VMA went). Once the replica's liveness lease has expired, another replica takes the record
 * over (intentClaim: one winner), answers the caller (EOWNERDEAD: it was rolled forward, so the
 * operation happens, but the reply it would have had is lost), puts the frames the dead one
 * cleared and never put, and runs the operation again from the top: each of these syscalls is
 * idempotent given its record (orphan_ranges.ts finishIntent).
 *
 * Fencing: the take-over changes the record's owner, and every PT lock asked for the operation
 * names it (ptlLock checks the owner), so a replica that was only stopped, and resumes after
 * the take-over, is refused the page tables of that operation:
 *
 *   mm-0 (stopped past its lease)             mm-1
 *   munmap: intentOpen(I, mm-0.a1)
 *   vmaUnmap ... SIGSTOP
 *                                             lease mm-0.a1 expired: intentClaim(I → mm-1.c3)
 *                                             reply EOWNERDEAD; munmap again; intentClose(I)
 *   SIGCONT: ptlLock(ptl:0, for I by mm-0.a1)
 *   → FENCED: pte.reject, ESTALE; no write
 *
 * A put of cleared frames is a batch (<id>#<batch>) applied once ({mem}:once), so the dead one's
 * put and the taker's never both land.
 */
import { currentReply } from '@mmlab/runtime';
import { MmlabError } from '@mmlab/protocol';
import type { IntentRec } from '@mmlab/model';
import { type MmContext, type OpIntent, ownerOf } from './context';
import { putPages, type Frame } from './page_alloc';
import { putHugetlbPages } from './hugetlb';
import { crashPoint } from './crash_point';

/** Record the operation op on pid before its first change; its steps run for the record. */
export async function intentBegin(
  ctx: MmContext,
  op: string,
  pid: number,
  syscall: IntentRec['syscall'],
  args: Record<string, unknown>,
): Promise<OpIntent> {
  const id = ownerOf(ctx, op);
  const origin = currentReply()?.origin;
  // ESTALE: this incarnation was found dead and fenced off pid (orphan_ranges.ts): serve on as
  // a new one.
  await ctx.store
    .intentOpen(pid, id, ctx.incarnation, { syscall, args, ...(origin && { reply: origin }) })
    .catch((e: unknown) => {
      if (e instanceof MmlabError && e.code === 'ESTALE') ctx.onFenced?.();
      throw e;
    });
  const it: OpIntent = { pid, id, owner: ctx.incarnation, batch: 0, chunks: 0 };
  ctx.intents.set(op, it);
  return it;
}

/**
 * Run op's steps under its intent record: recorded before the first (crash point
 * `<syscall>.intent` right after), forgotten after the last, whatever the outcome.
 */
export async function withIntent<T>(
  ctx: MmContext,
  op: string,
  pid: number,
  syscall: IntentRec['syscall'],
  args: Record<string, unknown>,
  steps: () => Promise<T>,
): Promise<T> {
  await intentBegin(ctx, op, pid, syscall, args);
  try {
    await crashPoint(ctx, `${syscall}.intent`);
    return await steps();
  } finally {
    await intentEnd(ctx, op);
  }
}

/** The operation op is over (done, or failed): forget its record, if it is still ours. */
export async function intentEnd(ctx: MmContext, op: string): Promise<void> {
  const it = ctx.intents.get(op);
  if (!it) return;
  ctx.intents.delete(op);
  if (await ctx.store.intentClose(it.pid, it.id, it.owner)) {
    const batches = [
      ...Array.from({ length: it.batch + 1 }, (_, i) => `${it.id}#${i}`),
      ...Array.from({ length: it.batch + 1 }, (_, i) => `${it.id}#${i}h`),
      ...Array.from({ length: it.chunks }, (_, i) => `${it.id}#c${i + 1}`),
    ];
    await ctx.store.onceForget(batches);
  }
}

/**
 * put_page() of frames the operation's zaps cleared (recorded in its intent): as the record's
 * current batch, applied once, then the record moves on to the next batch. hugetlbfs pool pages
 * (__unmap_hugepage_range's, hugetlb: true) go back to the pool as the batch's "<id>#<n>h" part,
 * applied once too. point: the crash point <syscall>.freed after the put (zap_pte_range's
 * batches; zap_huge_pmd and __unmap_hugepage_range have their own).
 */
export async function putCleared(
  ctx: MmContext,
  op: string,
  frames: Array<Frame & { hugetlb?: true }>,
  point = true,
): Promise<number> {
  const it = ctx.intents.get(op);
  const small = frames.filter((f) => !f.hugetlb);
  const pool = frames.filter((f) => f.hugetlb);
  if (!it) return (await putPages(ctx, op, small)) + (await putHugetlbPages(ctx, op, pool, ''));
  const freed =
    (small.length ? await putPages(ctx, op, small, 'map', `${it.id}#${it.batch}`) : 0) +
    (await putHugetlbPages(ctx, op, pool, `${it.id}#${it.batch}h`));
  if (point) await crashPoint(ctx, `${syscallOf(op)}.freed`);
  if (await ctx.store.intentFlushed(it.pid, it.id, it.owner, it.batch)) it.batch++;
  return freed;
}

/** The syscall of an op id ("mm-0/munmap#3" → "munmap"): the prefix of its crash points. */
export const syscallOf = (op: string): string => {
  const kind = op.slice(op.lastIndexOf('/') + 1);
  const hash = kind.indexOf('#');
  return hash < 0 ? kind : kind.slice(0, hash);
};
