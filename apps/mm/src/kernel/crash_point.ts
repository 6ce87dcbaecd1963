/**
 * Crash points: `crashPoint(ctx, '<syscall>.<step>')` at each step boundary of a multi-step
 * operation. Armed by a test (mmlab.mm.<id>.crash_point), the first replica of the lab to reach
 * the point dies right there with SIGKILL's abruptness (or stops, SIGSTOP): no finally block,
 * no reply, no lease release — what a replica killed at that step leaves is what the others
 * must finish or undo (intent.ts). Several replicas armed with one token fire once between
 * them (SET NX), so the replica that takes the operation over passes the same point unharmed.
 * Unarmed, a crash point costs one comparison.
 *
 * A point inside a PT-lock section passes the lock it holds (`held`); there the action
 * `lose-lease` stops that one operation instead of the whole replica (loseLease below).
 */
import { sleep } from '@mmlab/runtime';
import type { MmContext } from './context';
import type { HeldLock } from './locks';

export async function crashPoint(ctx: MmContext, point: string, held?: HeldLock): Promise<void> {
  const c = ctx.crash;
  if (!c || c.point !== point) return;
  // lose-lease needs a lease to lose: a pass through the point without a PT lock leaves it armed.
  if (c.action === 'lose-lease' && !held) return;
  ctx.crash = null;
  const at = `${ctx.instance}|${Date.now()}`;
  if (!(await ctx.store.crashFire(c.token, at))) return;
  ctx.tracer.emit({
    kind: 'crash.point',
    ...(held && {
      op: held.op,
      held: { pid: held.pid, lock: held.lock, token: held.lease.token },
    }),
    point,
    action: c.action,
  });
  process.stderr.write(`${ctx.incarnation}: crash point ${point} (${c.action})\n`);
  if (held && c.action === 'lose-lease') return loseLease(ctx, held);
  // What was traced up to here reaches the observer; nothing after it does.
  await ctx.tracer.flush().catch(() => undefined);
  process.kill(process.pid, c.action === 'kill' ? 'SIGKILL' : 'SIGSTOP');
  // SIGSTOP returns here once continued; SIGKILL never does.
}

/**
 * The action lose-lease: the operation holding `held` acts as if its task were stopped past the
 * lease TTL, while its replica runs on (a SIGSTOP would also stop the requests the queue group
 * keeps handing that replica, a new fault of the same page table among them). Its lease is no
 * longer renewed, so it runs out; the operation waits until another holder has been granted the
 * lock (ptlmax past its token) and has released it, then goes on with its stale token:
 *
 *   A (reached the point, token 7)          B (the next op to want ptl:0)
 *   lock ptl:0 token 7 (PTE cleared)
 *   crash point: stop renewing, wait
 *   ... the lease of ptl:0 runs out ...     spins on ptl:0 (BUSY)
 *                                           lock ptl:0 token 8 ... unlock
 *   sees ptlmax 8 and ptl:0 free
 *   set_pte_at(token 7): refused, ESTALE (pte.reject); with skip-fence-check accepted: a
 *   write under a lost lease, fenced-writes
 *
 * Waiting for B's release, not only for its grant, orders A's write after B's ptl.acquire in
 * every trace (B traces the acquire before it sends anything under the lock), so the checker
 * does not depend on how fast B's replica handles its reply. Nobody else wants the lock: A goes
 * on at the fault deadline, its lease lost all the same.
 */
async function loseLease(ctx: MmContext, held: HeldLock): Promise<void> {
  held.lease.stopRenewing();
  const deadline = Date.now() + ctx.env.MMLAB_FAULT_DEADLINE_MS;
  while (Date.now() < deadline) {
    // One connection, in this order: a newer grant seen first, then the lock free after it.
    const { max, locked } = await ctx.store.ptlState(held.pid, held.lock);
    if (max > held.lease.token && !locked) return;
    await sleep(5);
  }
}
