/**
 * The KSM step: one synchronous ksmd pass (ksm_do_scan, mm/ksm.c) over a range of one process,
 * or over several (`ranges`, across processes), merging pages of equal content into one KSM
 * page mapped read-only everywhere. Executed by apps/lab/src/steps/ksm.ts (RPC ksmMerge).
 */
import { z } from 'zod';
import { Pages } from '@mmlab/protocol';
import { AddrRef, Binding, PageOffset, common } from './common';

/** One range of a ksm.merge: a process, addr (+ page) and a length. */
export const KsmRange = z.strictObject({
  process: Binding,
  addr: AddrRef,
  page: PageOffset,
  pages: Pages,
});

/** `{ op: ksm.merge, process, addr, page?, pages }` or `{ op: ksm.merge, ranges: [...] }`. */
export const KsmMergeStep = z
  .strictObject({
    op: z.literal('ksm.merge'),
    process: Binding.optional(),
    addr: AddrRef.optional(),
    page: PageOffset,
    pages: Pages.optional(),
    ranges: z.array(KsmRange).min(1).max(64).optional(),
    ...common,
  })
  .superRefine((s, ctx) => {
    const one = s.process !== undefined || s.addr !== undefined || s.pages !== undefined;
    if (s.ranges !== undefined && one)
      ctx.addIssue({
        code: 'custom',
        path: ['ranges'],
        message: 'give either process/addr/pages or ranges, not both',
      });
    else if (
      s.ranges === undefined &&
      !(s.process !== undefined && s.addr !== undefined && s.pages !== undefined)
    )
      ctx.addIssue({
        code: 'custom',
        message: 'ksm.merge needs process, addr and pages, or ranges: [{process, addr, pages}]',
      });
  });

/** Every range of a ksm.merge step, the one-range form included. */
export const ksmRangesOf = (s: z.output<typeof KsmMergeStep>): Array<z.output<typeof KsmRange>> =>
  s.ranges ??
  (s.process !== undefined && s.addr !== undefined && s.pages !== undefined
    ? [{ process: s.process, addr: s.addr, page: s.page, pages: s.pages }]
    : []);

export const ksmSteps = [KsmMergeStep] as const;
export type KsmStepOp = z.output<(typeof ksmSteps)[number]>['op'];
