/**
 * Crash points: `crashPoint(ctx, '<syscall>.<step>')` at each step boundary of a multi-step
 * operation. Armed by a test (mmlab.mm.<id>.crash_point), the first replica of the lab to reach
 * the point dies right there with SIGKILL's abruptness (or stops, SIGSTOP): no finally block,
 * no reply, no lease release — what a replica killed at that step leaves is what the others
 * must finish or undo (intent.ts). Several replicas armed with one token fire once between
 * them (SET NX), so the replica that takes the operation over passes the same point unharmed.
 * Unarmed, a crash point costs one comparison.
 */
import { crashKey } from '@mmlab/model';
import type { MmContext } from './context';

export async function crashPoint(ctx: MmContext, point: string): Promise<void> {
  const c = ctx.crash;
  if (!c || c.point !== point) return;
  ctx.crash = null;
  const at = `${ctx.instance}|${Date.now()}`;
  const won = await ctx.store.redis.set(crashKey(c.token), at, 'PX', 60_000, 'NX');
  if (won !== 'OK') return;
  // What was traced up to here reaches the observer; nothing after it does.
  await ctx.tracer.flush().catch(() => undefined);
  process.stderr.write(`${ctx.incarnation}: crash point ${point} (${c.action})\n`);
  process.kill(process.pid, c.action === 'kill' ? 'SIGKILL' : 'SIGSTOP');
  // SIGSTOP returns here once continued; SIGKILL never does.
}
