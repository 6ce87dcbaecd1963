/**
 * The wire contract: every NATS request subject, declared once, with its request and reply
 * schemas. Services subscribe with these subjects, callers send with them, and
 * docs/protocol.md is generated from this table (`npm run protocol:doc`).
 *
 * A subject containing `{id}` is per instance (one CPU, one mm replica); use `subjectFor`.
 */
import { z } from 'zod';
import { Access, Addr, Agent, Gen, MapFlag, Pages, Pfn, Pid, Prot, Value } from './fields';

export interface RpcDef<Req extends z.ZodType = z.ZodType, Res extends z.ZodType = z.ZodType> {
  readonly subject: string;
  readonly doc: string;
  /** Kernel function (or hardware behaviour) the handler models. */
  readonly models: string;
  /** Queue group: one member answers (mm replicas); absent: every subscriber gets it. */
  readonly queue?: string;
  /** Broadcast: every instance answers; callers collect several replies. */
  readonly broadcast?: boolean;
  readonly request: Req;
  readonly response: Res;
}

const def = <Req extends z.ZodType, Res extends z.ZodType>(d: RpcDef<Req, Res>): RpcDef<Req, Res> =>
  d;
const empty = z.strictObject({});

export const FaultKind = z.enum(['zero', 'anon', 'wp-copy', 'wp-reuse', 'spurious']);
export type FaultKind = z.infer<typeof FaultKind>;

export const RPC = {
  processCreate: def({
    subject: 'mmlab.mm.process.create',
    doc: 'Create an empty address space and return its pid.',
    models: 'mm_alloc() / execve of an empty image',
    queue: 'mm',
    request: empty,
    response: z.object({ pid: Pid }),
  }),
  mmap: def({
    subject: 'mmlab.mm.mmap',
    doc: 'Map anonymous memory (private, or shared with flags: [shared]) and return its start address.',
    models: 'do_mmap() for MAP_ANONYMOUS',
    queue: 'mm',
    request: z.strictObject({
      pid: Pid,
      pages: Pages,
      prot: Prot,
      flags: z.array(MapFlag).default([]),
    }),
    response: z.object({ addr: Addr }),
  }),
  munmap: def({
    subject: 'mmlab.mm.munmap',
    doc: 'Unmap [addr, addr + pages): zap the PTEs, shoot down CPU TLBs, free the frames, drop the VMAs.',
    models: 'do_munmap() → unmap_region() → zap_page_range()',
    queue: 'mm',
    request: z.strictObject({ pid: Pid, addr: Addr, pages: Pages }),
    response: z.object({
      zapped: z.number().int().nonnegative(),
      freed: z.number().int().nonnegative(),
    }),
  }),
  fault: def({
    subject: 'mmlab.mm.fault',
    doc: 'Resolve a page fault at addr for a read or write by agent; replies with the PTE now installed.',
    models: 'handle_mm_fault() → do_anonymous_page() / do_wp_page()',
    queue: 'mm',
    request: z.strictObject({ pid: Pid, addr: Addr, access: Access, agent: Agent }),
    response: z.object({
      pfn: Pfn,
      gen: Gen,
      writable: z.boolean(),
      kind: FaultKind,
      retries: z.number().int().nonnegative(),
    }),
  }),
  meminfo: def({
    subject: 'mmlab.mm.meminfo',
    doc: 'Frame accounting: total, free and allocated frames.',
    models: '/proc/meminfo',
    queue: 'mm',
    request: empty,
    response: z.object({
      frames: z.number().int(),
      free: z.number().int(),
      allocated: z.number().int(),
    }),
  }),
  mmDebug: def({
    subject: 'mmlab.mm.{id}.debug',
    doc: 'Arm a stall on one mm replica: its next PT-lock-holding operation sleeps ms while holding the lock (to kill or pause it there).',
    models: 'a debugger breakpoint inside a spin_lock() section',
    request: z.strictObject({ stallUnderPtlMs: z.number().int().nonnegative().max(600_000) }),
    response: z.object({ armed: z.boolean() }),
  }),
  cpuAccess: def({
    subject: 'mmlab.cpu.{id}.access',
    doc: 'A load or store by one CPU: TLB lookup, page walk on a miss, fault to mm and retry, then the frame access.',
    models: 'a user-mode load/store through the MMU',
    request: z.strictObject({ pid: Pid, addr: Addr, op: Access, value: Value.optional() }),
    response: z.object({
      value: Value,
      pfn: Pfn,
      gen: Gen,
      faults: z.number().int().nonnegative(),
      tlbHit: z.boolean(),
      stale: z.boolean(),
    }),
  }),
  cpuFlushTlb: def({
    subject: 'mmlab.cpu.{id}.flush_tlb',
    doc: "Shoot down this CPU's TLB entries of pid in [start, end), after in-flight accesses through them complete.",
    models: 'flush_tlb_mm_range() IPI → flush_tlb_func()',
    request: z.strictObject({
      pid: Pid,
      start: Addr,
      end: Addr,
      op: z.string().max(128).optional(),
    }),
    response: z.object({ flushed: z.number().int().nonnegative() }),
  }),
  ping: def({
    subject: 'mmlab.ctl.ping',
    doc: 'Every service instance answers with its name: readiness and liveness.',
    models: '(lab control)',
    broadcast: true,
    request: empty,
    response: z.object({ service: z.string(), instance: z.string() }),
  }),
  flush: def({
    subject: 'mmlab.ctl.flush',
    doc: 'Every instance flushes the trace events it published to the NATS server, then answers.',
    models: '(lab control)',
    broadcast: true,
    request: empty,
    response: z.object({ service: z.string(), instance: z.string(), published: z.number().int() }),
  }),
  observerSync: def({
    subject: 'mmlab.observer.sync',
    doc: 'The observer answers once every event delivered to it before this request has been stored.',
    models: '(lab control)',
    request: empty,
    response: z.object({ events: z.number().int().nonnegative() }),
  }),
} as const;

export type RpcName = keyof typeof RPC;
export type Req<N extends RpcName> = z.input<(typeof RPC)[N]['request']>;
export type ReqParsed<N extends RpcName> = z.output<(typeof RPC)[N]['request']>;
export type Res<N extends RpcName> = z.output<(typeof RPC)[N]['response']>;

/** The concrete subject of a per-instance RPC (`mmlab.cpu.{id}.access` → `mmlab.cpu.0.access`). */
export function subjectFor(d: RpcDef, id?: string | number): string {
  if (!d.subject.includes('{id}')) return d.subject;
  if (id === undefined || !/^[A-Za-z0-9_-]+$/.test(String(id)))
    throw new Error(`subject ${d.subject} needs an instance id, got ${String(id)}`);
  return d.subject.replace('{id}', String(id));
}

/** Every RPC, in declaration order (for the malformed-message sweep and the reference doc). */
export const ALL_RPCS: ReadonlyArray<[RpcName, RpcDef]> = Object.entries(RPC) as Array<
  [RpcName, RpcDef]
>;
