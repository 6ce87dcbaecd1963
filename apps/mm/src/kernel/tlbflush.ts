/**
 * flush_tlb_mm_range(): shoot down the CPU TLB entries of [start, end) on every CPU in
 * mm_cpumask and wait for each ack. Called with the PT lock held, as the kernel does
 * (flush_tlb_range under the PTE lock, smp_call_function_many + csd_lock_wait).
 *
 * The kernel never gives up on an online CPU: csd_lock_wait() spins until the IPI handler ran,
 * however long that CPU takes. mmlab does the same: a CPU that does not ack in time but whose
 * liveness lease is alive (LivenessLease, libs/model) is only slow or paused, so the shootdown
 * is resent until it acks, and the PT lock stays held all that time (its lease keeps renewing:
 * a long hold, which bounded-ptlock-hold reports past the soft-lockup threshold, as the
 * kernel's watchdog would). A CPU whose lease expired, or for which nobody listens at all (its
 * process is gone: NATS answers "no responders"), is offline: it is fenced (memory refuses its
 * accesses until it has flushed its whole TLB and lifted the fence itself) and taken out of
 * mm_cpumask, and the shootdown goes on without it.
 *
 *   mm (holds ptl)                          cpu0 (SIGSTOPped)
 *   cpuFlushTlb → no ack in time
 *   EXISTS live:cpu0 → 1: resend ...
 *                                           lease expires
 *   EXISTS live:cpu0 → 0: fence cpu0,
 *   SREM cpumask cpu0, unlock, free page
 *                                           SIGCONT: lease lapsed (or access → FENCED):
 *                                           flush whole TLB, take lease, unfence, serve
 *
 * Taking a CPU out races with its return; the fence is looked at again after the SREM:
 *
 *   mm                                      cpu0
 *   fence cpu0
 *                                           access → FENCED: flush all, lease, unfence
 *                                           walk: SADD cpumask cpu0, fill TLB
 *   SREM cpumask cpu0                       ← cpu0 caches but is no longer in the mask
 *   SISMEMBER fenced cpu0 → 0: it came back: SADD it back and keep shooting it down (a spare
 *   member costs one more shootdown; a missing one a stale TLB entry). Still fenced: whatever
 *   cpu0 caches it can only use after a whole flush, and its walks after that SADD again.
 *
 * A fenced CPU that was alive all along (a NATS restart hid it, a lease renewal came late)
 * loses nothing but its TLB contents.
 */
import { MmlabError } from '@mmlab/protocol';
import { sleep } from '@mmlab/runtime';
import type { MmContext } from './context';

const CPU_AGENT = /^cpu(\d+)$/;
/**
 * Deadline of one shootdown attempt. An IPI is answered in microseconds; an attempt lost with
 * a restarting nats-server must not keep the PT lock for a whole RPC timeout before the resend.
 */
const SHOOTDOWN_ATTEMPT_MS = 1000;

export async function flushTlbRange(
  ctx: MmContext,
  op: string,
  pid: number,
  start: number,
  end: number,
  cpumask: string[],
): Promise<void> {
  const cpus = cpumask
    .map((a) => CPU_AGENT.exec(a)?.[1])
    .filter((id): id is string => id !== undefined);
  await Promise.all(cpus.map((id) => csdLockWait(ctx, op, pid, start, end, id)));
}

/**
 * smp_call_function_single() + csd_lock_wait() for one CPU: send the shootdown and resend it
 * until the CPU acks; a CPU whose lease expired, or that nobody listens for, is taken offline
 * instead (setCpuOffline). Any error other than those two transport failures (no reply in
 * time, no responders) is the CPU's answer and is thrown.
 */
async function csdLockWait(
  ctx: MmContext,
  op: string,
  pid: number,
  start: number,
  end: number,
  id: string,
): Promise<void> {
  const agent = `cpu${id}`;
  for (let attempt = 0; ; attempt++) {
    let code: string;
    try {
      await ctx.rpc.call(
        'cpuFlushTlb',
        { pid, start, end, op },
        { id, timeoutMs: Math.min(ctx.env.MMLAB_RPC_TIMEOUT_MS, SHOOTDOWN_ATTEMPT_MS) },
      );
      return;
    } catch (e) {
      if (!(
        e instanceof MmlabError &&
        (e.code === 'ENOHANDLER' || e.code === 'ETIMEDOUT' || e.code === 'ESHUTDOWN')
      ))
        throw e;
      // ESHUTDOWN: the CPU stopped before it acked (its clean stop gave up): no ack, as a timeout
      code = e.code === 'ESHUTDOWN' ? 'ETIMEDOUT' : e.code;
    }
    // Slow or paused, still online: csd_lock_wait() goes on.
    if (code === 'ETIMEDOUT' && (await ctx.store.subscriberIsAlive(agent))) continue;
    if (await setCpuOffline(ctx, pid, agent)) {
      const reason = code === 'ENOHANDLER' ? 'no one listens for it' : 'liveness lease expired';
      ctx.tracer.emit({ kind: 'cpu.offline', op, pid, agent, reason });
      return;
    }
    // It came back meanwhile: resend (paced: "no responders" answers at once).
    await sleep(Math.min(100, 5 * (attempt + 1)));
  }
}

/**
 * Models set_cpu_online(cpu, false) as seen by one mm: fence the CPU, take it out of
 * mm_cpumask; false (and back in the mask) if it lifted its fence meanwhile (race above).
 */
async function setCpuOffline(ctx: MmContext, pid: number, agent: string): Promise<boolean> {
  await ctx.store.fence(agent);
  await ctx.store.cpumaskClear(pid, agent);
  if (await ctx.store.isFenced(agent)) return true;
  await ctx.store.cpumaskAdd(pid, agent);
  return false;
}
