/**
 * Handlers of the control steps (schemas: libs/scenario/src/steps/control.ts, and `parallel`
 * in schema.ts): branches at once, a wait (a time, or a trace event), mm's PT-lock stall and a
 * lost PT-lock lease.
 */
import { randomBytes } from 'node:crypto';
import { MmlabError } from '@mmlab/protocol';
import { sleep } from '@mmlab/runtime';
import type { ControlStepOp } from '@mmlab/scenario';
import type { StepContext, StepHandlers } from './context';

/** How often trace.wait asks the observer (a wait for an event, not a guess of its time). */
const TRACE_POLL_MS = 10;

const mmReplicas = (ctx: StepContext): string[] => ctx.instances.filter((i) => /^mm-\d+$/.test(i));

export const controlHandlers: StepHandlers<ControlStepOp> = {
  parallel: async (step, ctx, path) => {
    // Every branch in order, all branches at once; the bindings are shared, which is safe
    // because check.ts forbids a branch to read or rebind another's names.
    const branches = await Promise.all(
      step.branches.map((b, bi) => ctx.runList(b, `${path}.branches[${bi}]`)),
    );
    return { value: undefined, branches };
  },
  sleep: async (step) => {
    await sleep(step.ms);
    return { value: undefined };
  },
  'mm.stall': async (step, ctx) => {
    const { rpc, timeoutMs } = ctx;
    await Promise.all(
      mmReplicas(ctx).map((id) =>
        rpc.call('mmDebug', { stallUnderPtlMs: step.ms }, { id, timeoutMs }),
      ),
    );
    return { value: undefined };
  },
  'mm.lose_lease': async (step, ctx) => {
    const { rpc, timeoutMs } = ctx;
    // One token for every replica: the point fires once in the lab, wherever it is reached.
    const token = `lose-lease-${randomBytes(6).toString('hex')}`;
    const req = { point: step.at, token, action: 'lose-lease' as const };
    await Promise.all(
      mmReplicas(ctx).map((id) => rpc.call('mmCrashPoint', req, { id, timeoutMs })),
    );
    return { value: { token } };
  },
  'trace.wait': async (step, ctx) => {
    const limit = step.timeoutMs ?? ctx.timeoutMs;
    const deadline = Date.now() + limit;
    for (;;) {
      const seen = await ctx.traceCount(step.event, step.instance);
      if (seen >= step.count) return { value: seen };
      if (Date.now() > deadline)
        throw new MmlabError(
          'ETIMEDOUT',
          `${seen} of ${step.count} ${step.event} event(s)` +
            `${step.instance ? ` from ${step.instance}` : ''} after ${limit} ms`,
        );
      await sleep(TRACE_POLL_MS);
    }
  },
};
