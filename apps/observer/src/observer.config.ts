/**
 * The observer's configuration: the lab-wide variables of @mmlab/runtime's loadEnv, plus the
 * store cap, which only the observer reads.
 */
import { z } from 'zod';
import { type Env, loadEnv } from '@mmlab/runtime';
import { DEFAULT_MAX_EVENTS } from './trace-store';

const ObserverOnly = z.object({
  /** Events kept in memory; beyond it the oldest are dropped (and counted). */
  MMLAB_OBSERVER_MAX_EVENTS: z.coerce.number().int().positive().default(DEFAULT_MAX_EVENTS),
});

export type ObserverEnv = Env & Partial<z.infer<typeof ObserverOnly>>;

export function loadObserverEnv(
  env: NodeJS.ProcessEnv = process.env,
): ObserverEnv & Required<Pick<ObserverEnv, 'MMLAB_INSTANCE' | 'MMLAB_OBSERVER_MAX_EVENTS'>> {
  const common = loadEnv(env);
  const r = ObserverOnly.safeParse(env);
  if (!r.success)
    throw new Error(
      `bad configuration:\n${r.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`).join('\n')}`,
    );
  return { ...common, MMLAB_INSTANCE: common.MMLAB_INSTANCE ?? 'observer', ...r.data };
}

/** What the HTTP controllers need from the configuration. */
export interface ObserverSettings {
  /** default threshold of GET /invariants */
  softlockupMs: number;
  /** the lab's token (MMLAB_LAB_TOKEN): mutating requests need it; the dashboard page carries it */
  labToken?: string;
}
export const OBSERVER_SETTINGS = Symbol('OBSERVER_SETTINGS');
