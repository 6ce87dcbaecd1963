/**
 * Service configuration from the environment, validated once at start-up. The same variable
 * names are used by the native runner (scripts/lab.sh, `mmlab run --local`) and by compose.
 */
import { hostname } from 'node:os';
import { z } from 'zod';
import { Dispatch, InjectMode, MmuLockMode, Mode, ThpMode } from '@mmlab/protocol';

const int = (d: number) => z.coerce.number().int().nonnegative().default(d);

export const EnvSchema = z.object({
  NATS_URL: z.string().default('nats://127.0.0.1:4222'),
  REDIS_URL: z.string().default('redis://127.0.0.1:6379'),
  /** Instance name, unique in the lab: mm-0, cpu0, observer ... */
  MMLAB_INSTANCE: z
    .string()
    .regex(/^[A-Za-z0-9_-]+$/)
    .optional(),
  MMLAB_MODE: Mode.default('patched'),
  /** Frames in the zone (physical memory), set up by the first mm replica that starts. */
  MMLAB_FRAMES: int(256),
  /** Slots of the swap device, set up with the frames (0: no swap). */
  MMLAB_SWAP_SLOTS: z.coerce.number().int().nonnegative().default(0),
  /** Transparent huge pages: always (anonymous THP on aligned faults) or never (the default). */
  MMLAB_THP: ThpMode.default('never'),
  /** A huge page is 2^order frames (HPAGE_PMD_ORDER; small by default so scenarios stay fast). */
  MMLAB_HUGE_PAGE_ORDER: z.coerce.number().int().min(1).max(9).default(3),
  /** Huge pages reserved for hugetlbfs at boot (nr_hugepages), set up with the frames. */
  MMLAB_HUGETLB_PAGES: z.coerce.number().int().nonnegative().default(0),
  /** mm: kswapd wakes when free frames fall below this (0: no kswapd) ... */
  MMLAB_WATERMARK_LOW: z.coerce.number().int().nonnegative().default(0),
  /** ... and reclaims until this many are free. */
  MMLAB_WATERMARK_HIGH: z.coerce.number().int().nonnegative().default(0),
  /**
   * mm: RLIMIT_MEMLOCK in pages: a process's pinned registrations together (pinned_vm) may pin
   * no more; unset: a quarter of MMLAB_FRAMES.
   */
  MMLAB_MEMLOCK_PAGES: z.coerce.number().int().nonnegative().optional(),
  /** PT-lock and mmap_sem lease TTL; renewed every third of it while held. */
  MMLAB_LEASE_TTL_MS: int(2000),
  /** bounded-ptlock-hold threshold: the lab's soft-lockup watchdog. */
  MMLAB_SOFTLOCKUP_MS: int(1000),
  /** Give up a fault after contention lasts this long (EAGAIN). */
  MMLAB_FAULT_DEADLINE_MS: int(10_000),
  /** Deadline of one NATS request between services. */
  MMLAB_RPC_TIMEOUT_MS: int(5_000),
  /** cpu: which CPU this process is; unset: claim the next free id (compose --scale, k8s replicas). */
  MMLAB_CPU_ID: z.coerce.number().int().nonnegative().optional(),
  /** observer: HTTP port. */
  MMLAB_OBSERVER_PORT: int(8080),
  /** mm, cpu, hca: HTTP port of GET /metrics and GET /health (0: no HTTP listener; compose: 9464). */
  MMLAB_HTTP_PORT: int(0),
  /**
   * Address every HTTP server binds: the observer, the lab API, each service's /metrics and
   * /health. Natively only this machine (loopback); compose and deploy/k8s set 0.0.0.0, where
   * other containers (and the published ports) must reach them.
   */
  MMLAB_HTTP_HOST: z.string().min(1).default('127.0.0.1'),
  /**
   * The lab's token: every mutating HTTP request (POST/PUT/PATCH/DELETE of the observer and the
   * lab API) must carry it (`Authorization: Bearer <token>` or `X-Mmlab-Token`). `mmlab up`
   * generates one per lab; there is no default: unset (or empty, as compose passes an unset
   * variable), mutating requests are refused (EACCES) with a message saying how to set it.
   */
  MMLAB_LAB_TOKEN: z
    .string()
    .default('')
    .transform((s) => s.trim())
    .pipe(
      z.union([
        z.literal(''),
        z.string().min(16, 'too short: use at least 16 characters (e.g. openssl rand -hex 32)'),
      ]),
    )
    .transform((s) => s || undefined),
  /**
   * CLI: where `mmlab up` writes the running lab's token (lab-<api port>.token, mode 0600) and
   * `mmlab chaos`/`heal` read it. Default $XDG_RUNTIME_DIR/mmlab, else <tmpdir>/mmlab-<uid>.
   */
  MMLAB_RUNTIME_DIR: z.string().optional(),
  /** How mm calls the subscribers of one invalidation: all at once, or one after another as the kernel does. */
  MMLAB_DISPATCH: Dispatch.default('parallel'),
  /** Comma-separated fault-injection modes (see InjectMode). */
  MMLAB_INJECT: z
    .string()
    .default('')
    .transform((s) =>
      s
        .split(',')
        .map((x) => x.trim())
        .filter(Boolean),
    )
    .pipe(z.array(InjectMode)),
  /** One attempt of a notifier callback; on timeout mm checks the subscriber's liveness and resends. */
  MMLAB_CALLBACK_TIMEOUT_MS: int(2000),
  /** A subscriber's liveness lease (renewed every third of it, on a path separate from callbacks). */
  MMLAB_SUBSCRIBER_LEASE_MS: int(3000),
  /** hca: device invalidation ("completion interrupt") latency: "200", "uniform:100:300", "normal:200:50", "pareto:100:1.5". */
  MMLAB_INVALIDATE_LATENCY: z.string().default('0'),
  /** hca: give up a network page fault after this long (HMM_RANGE_DEFAULT_TIMEOUT). */
  MMLAB_NPF_TIMEOUT_MS: int(1000),
  /**
   * hca (npfDelayMs), kvm (faultDelayMs): a slow page-fault path, a test hook: between the
   * page lookup and the re-check under the driver's lock, wait up to this long for an
   * invalidation to arrive (makes the race the re-check closes deterministic in tests).
   */
  MMLAB_NPF_DELAY_MS: int(0),
  /**
   * kvm, a test hook: a crash point of its page fault (`tdp_page_fault.<step>`, '' none) — the
   * instance kills itself (SIGKILL) the first time a fault reaches it (apps/kvm tdp_page_fault.ts).
   */
  MMLAB_KVM_CRASH_POINT: z
    .string()
    .regex(/^(tdp_page_fault\.[a-z_]+)?$/)
    .default(''),
  /** kvm: how kvm->mmu_lock is held for a range zap: spin (v3.7), sleep, generation. */
  MMLAB_MMU_LOCK: MmuLockMode.default('spin'),
  /** Seed for every random choice a service makes (latency distributions). */
  MMLAB_SEED: int(1),
  /** observer: where to append every event as JSON lines (empty: memory only). */
  MMLAB_TRACE_FILE: z.string().default(''),
});
export type Env = z.infer<typeof EnvSchema>;

export function loadEnv(env: NodeJS.ProcessEnv = process.env): Env {
  const r = EnvSchema.safeParse(env);
  if (!r.success) {
    const lines = r.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`);
    throw new Error(`bad configuration:\n${lines.join('\n')}`);
  }
  return r.data;
}

/** The host name as an instance name (mm replicas under compose or Kubernetes: one per container). */
export function hostInstance(prefix: string): string {
  return `${prefix}-${hostname().replace(/[^A-Za-z0-9_-]/g, '-')}`;
}
