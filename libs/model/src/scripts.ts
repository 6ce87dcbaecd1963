/**
 * The Lua scripts: every state change of the lab is one of these, atomic in Redis, declared once
 * (boundary.ts) in the file of the one hash tag it touches: physical memory (mem/scripts.ts), an
 * address space (mm/scripts.ts) or the mm replicas (replica/scripts.ts). docs/redis.md is
 * generated from this table (gen-doc.ts).
 */
import { KSM_SCRIPTS } from './ksm/scripts';
import { MEM_SCRIPTS } from './mem/scripts';
import { MM_SCRIPTS } from './mm/scripts';
import { HUGETLB_SCRIPTS } from './mm/hugetlb-scripts';
import { REPLICA_SCRIPTS } from './replica/scripts';
import { MEM_THP_SCRIPTS } from './mem/thp-scripts';
import { THP_SCRIPTS } from './mm/thp-scripts';

export const SCRIPTS = {
  ...MEM_SCRIPTS,
  ...MM_SCRIPTS,
  ...REPLICA_SCRIPTS,
  ...MEM_THP_SCRIPTS,
  ...THP_SCRIPTS,
  ...HUGETLB_SCRIPTS,
  ...KSM_SCRIPTS,
} as const;

export type ScriptName = keyof typeof SCRIPTS;
