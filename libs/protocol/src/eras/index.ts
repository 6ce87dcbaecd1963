/** The kernel eras mmlab models (era.ts): each one's ordering per seed call site. */
import type { Kernel } from '../fields';
import type { Era } from './era';
import { V3_6 } from './v3_6';
import { V3_7 } from './v3_7';

export * from './era';
export { V3_6 } from './v3_6';
export { V3_7 } from './v3_7';
export { SEED_ROWS, type SeedRow, renderSeedTable } from './seed';

export const ERAS: Readonly<Record<Kernel, Era>> = { 'v3.6': V3_6, 'v3.7': V3_7 };
