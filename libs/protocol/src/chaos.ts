/**
 * Callback-level faults of a notifier subscriber (an HCA or a KVM): what the lab's nemesis
 * sets on `mmlab.sub.<name>.chaos`. Process-level faults (pause, kill, restart) are not here:
 * they are done to the process from outside, not asked of it.
 */
import { z } from 'zod';
import { LatencySpec, MnCallback } from './fields';

/**
 * latency   each callback waits a draw from `distribution` (+ uniform jitter) before its work
 * hang      each callback waits until healed, then does its work and acks (the lease stays
 *           alive: mm must keep waiting, never fence)
 * drop-ack  the work is done, the first ack of each inv is never sent (mm's resend of the same
 *           inv is answered)
 * dup-ack   every ack is sent twice
 * late-ack  the subscriber stops renewing its liveness lease and holds the ack until the lease
 *           has expired (a zombie: mm fences it; the ack then lands on nobody)
 * crash     the process dies (SIGKILL to itself) in the middle of the callback: after mn.recv
 *           and the device zap began, before the ack
 */
export const SUB_FAULTS = ['latency', 'hang', 'drop-ack', 'dup-ack', 'late-ack', 'crash'] as const;
export const SubFaultKind = z.enum(SUB_FAULTS);
export type SubFaultKind = z.infer<typeof SubFaultKind>;

export const SubFault = z
  .strictObject({
    fault: SubFaultKind,
    /** latency: the delay of each callback (ms, or "uniform:a:b", "normal:mean:sd", "pareto:scale:shape") */
    distribution: LatencySpec.optional(),
    /** latency: plus a uniform draw in [0, jitterMs) */
    jitterMs: z.number().nonnegative().max(600_000).optional(),
    /** the callbacks it applies to (default: every callback) */
    callbacks: z.array(MnCallback).min(1).optional(),
  })
  .superRefine((f, ctx) => {
    if (f.fault === 'latency' && f.distribution === undefined)
      ctx.addIssue({ code: 'custom', message: 'a latency fault needs a distribution' });
    if (f.fault !== 'latency' && (f.distribution !== undefined || f.jitterMs !== undefined))
      ctx.addIssue({
        code: 'custom',
        message: `distribution and jitterMs belong to a latency fault, not ${f.fault}`,
      });
  });
export type SubFault = z.output<typeof SubFault>;
