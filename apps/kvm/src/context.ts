/** What the KVM model works with: its name, Redis, the mm over NATS, its tracer and knobs. */
import {
  type Env,
  LatencySampler,
  OpIds,
  type RpcClient,
  type Tracer,
  seedFor,
} from '@mmlab/runtime';
import type { SubscriberStore } from '@mmlab/subscriber';

/** The Redis calls KVM makes: those of its subscriber core (vCPU accesses go through its fence). */
export type KvmStore = SubscriberStore;
/** The RPCs KVM makes (gup, notifierRegister, notifierUnregister). */
export type KvmRpc = Pick<RpcClient, 'call'>;

export type KvmEnv = Pick<
  Env,
  | 'MMLAB_INVALIDATE_LATENCY'
  | 'MMLAB_NPF_DELAY_MS'
  | 'MMLAB_SUBSCRIBER_LEASE_MS'
  | 'MMLAB_SEED'
  | 'MMLAB_INJECT'
  | 'MMLAB_FAULT_DEADLINE_MS'
  | 'MMLAB_RPC_TIMEOUT_MS'
  | 'MMLAB_MMU_LOCK'
  | 'MMLAB_KVM_CRASH_POINT'
>;

export interface KvmContext {
  /** instance name (kvm0, ...): the agent of its sPTEs and accesses, its subscriber name */
  readonly name: string;
  readonly store: KvmStore;
  readonly rpc: KvmRpc;
  readonly tracer: Tracer;
  readonly ids: OpIds;
  readonly env: KvmEnv;
  /** a slow KVM: what each sleepable invalidation takes after its zap (invalidateLatencyMs) */
  readonly latency: LatencySampler;
  /** inject kvm-skip-retry: tdp_page_fault installs without mmu_notifier_retry() */
  readonly skipRetry: boolean;
  readonly log: { warn(msg: string): void };
}

export function createContext(deps: {
  name: string;
  store: KvmStore;
  rpc: KvmRpc;
  tracer: Tracer;
  env: KvmEnv;
  log?: { warn(msg: string): void };
}): KvmContext {
  return {
    ...deps,
    ids: new OpIds(deps.name),
    latency: new LatencySampler(
      deps.env.MMLAB_INVALIDATE_LATENCY,
      seedFor(deps.env.MMLAB_SEED, deps.name),
    ),
    skipRetry: deps.env.MMLAB_INJECT.includes('kvm-skip-retry'),
    log: deps.log ?? { warn: (m) => console.warn(m) },
  };
}
