/**
 * Transparent huge page steps (issue 14; these names are the contract): split the huge page
 * mapped at an address, or collapse the aligned range around one into a huge page (one
 * khugepaged pass).
 */
import { z } from 'zod';
import { AddrRef, Binding, PageOffset, step } from './common';

const at = { process: Binding, addr: AddrRef, page: PageOffset };

/** split_huge_page() of the huge page mapped at addr (+ page) in every address space mapping it. */
export const ThpSplitStep = step('thp.split', at);
/** collapse_huge_page(): the aligned range around addr (+ page) becomes one huge page. */
export const ThpCollapseStep = step('thp.collapse', at);

export const thpSteps = [ThpSplitStep, ThpCollapseStep] as const;
export type ThpStepOp = z.output<(typeof thpSteps)[number]>['op'];
