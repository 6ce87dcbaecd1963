/**
 * How a path of this mm replica learns its ordering: its era (libs/protocol eras/: v3.6 or
 * v3.7, from MMLAB_MODE) and the site's entry there — the one place a path branches on the
 * kernel version.
 */
import { ERAS, type Era, KERNEL_OF_MODE, type Notify, type SeedSite } from '@mmlab/protocol';
import type { MmContext } from './context';

/** The era this mm replica runs (MMLAB_MODE: patched = v3.7, legacy = v3.6). */
export const eraOf = (ctx: Pick<MmContext, 'env'>): Era => ERAS[KERNEL_OF_MODE[ctx.env.MMLAB_MODE]];

/** How `site` tells the secondary MMUs in this replica's era. */
export const notifyOf = (ctx: Pick<MmContext, 'env'>, site: SeedSite): Notify =>
  eraOf(ctx).notify[site];
