/** What the device model works with: its name, Redis, the mm over NATS, its tracer and knobs. */
import {
  type Env,
  LatencySampler,
  OpIds,
  type RpcClient,
  type Tracer,
  seedFor,
} from '@mmlab/runtime';
import type { SubscriberStore } from '@mmlab/subscriber';
import { type InflightDma, newInflightDma } from './dma';

/** The Redis calls the HCA makes: those of its subscriber core (tests stand in for it). */
export type HcaStore = SubscriberStore;
/** The RPCs the HCA makes (gup, unpin, notifierRegister, notifierUnregister). */
export type HcaRpc = Pick<RpcClient, 'call'>;

export type HcaEnv = Pick<
  Env,
  | 'MMLAB_INVALIDATE_LATENCY'
  | 'MMLAB_NPF_TIMEOUT_MS'
  | 'MMLAB_NPF_DELAY_MS'
  | 'MMLAB_SUBSCRIBER_LEASE_MS'
  | 'MMLAB_SEED'
  | 'MMLAB_INJECT'
  | 'MMLAB_FAULT_DEADLINE_MS'
  | 'MMLAB_RPC_TIMEOUT_MS'
>;

export interface HcaContext {
  /** instance name: the agent of every access and the notifier subscriber name */
  readonly name: string;
  readonly store: HcaStore;
  readonly rpc: HcaRpc;
  readonly tracer: Tracer;
  readonly ids: OpIds;
  readonly env: HcaEnv;
  /** the device's invalidation completion latency */
  readonly latency: LatencySampler;
  readonly inflight: InflightDma;
  /** inject skip-seq-recheck: the fault path installs without ib_umem_mmu_notifier_retry */
  readonly skipSeqRecheck: boolean;
  readonly log: { warn(msg: string): void };
}

export function createContext(deps: {
  name: string;
  store: HcaStore;
  rpc: HcaRpc;
  tracer: Tracer;
  env: HcaEnv;
  log?: { warn(msg: string): void };
}): HcaContext {
  return {
    ...deps,
    ids: new OpIds(deps.name),
    latency: new LatencySampler(
      deps.env.MMLAB_INVALIDATE_LATENCY,
      seedFor(deps.env.MMLAB_SEED, deps.name),
    ),
    inflight: newInflightDma(),
    skipSeqRecheck: deps.env.MMLAB_INJECT.includes('skip-seq-recheck'),
    log: deps.log ?? { warn: (m) => console.warn(m) },
  };
}
