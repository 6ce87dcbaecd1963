/**
 * The Nest side of the wire contract: every handler is declared with `@Rpc(name)`, which
 * subscribes it to the subject from libs/protocol (with its queue group), validates what
 * arrives against the request schema, and turns anything thrown into a typed wire error.
 * A message that is not even JSON reaches the handler as MALFORMED and gets EBADMSG back.
 *
 * The transport is Nest's own NATS server (ServerNats) with one addition, MmlabServerNats: each
 * message is handled inside a ReplyControl of its own (an AsyncLocalStorage bound to that
 * message), through which the handler may ask for its reply to be dropped, sent twice or held
 * back (a subscriber's callback-level faults, callback-faults.ts). Untouched, it replies exactly
 * as Nest does.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import {
  Catch,
  Controller,
  type DynamicModule,
  type RpcExceptionFilter,
  type INestApplication,
  type INestMicroservice,
  type LogLevel,
  Logger,
  type Type,
} from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import {
  type ConsumerDeserializer,
  Ctx,
  type IncomingRequest,
  MessagePattern,
  type MicroserviceOptions,
  Payload,
  RpcException,
  ServerNats,
  Transport,
} from '@nestjs/microservices';
import type { Msg, MsgHdrs, NatsConnection, Subscription } from 'nats';
import type { SpanOptions } from '@opentelemetry/api';
import type { z } from 'zod';
import { type Observable, throwError } from 'rxjs';
import {
  MALFORMED,
  MalformedData,
  MmlabError,
  RPC,
  type ReqParsed,
  type Res,
  type RpcName,
  type WireError,
  actorOf,
  actorOfSubject,
  subjectFor,
} from '@mmlab/protocol';
import {
  SpanKind,
  extractTraceContext,
  inSpan,
  initTelemetry,
  otlpConfigured,
  shutdownTelemetry,
  telemetryEnabled,
  telemetryIdentity,
} from './otel';
import { loadEnv } from './config';
import { type HttpSideOptions, startHybridApp } from './http';
import type { Tracer } from './tracer';
import { NATS_COMMON_OPTIONS, natsServerOptions } from './nats';

/** Decode without ever throwing: Nest's own JSON deserializer throws, and the caller hangs. */
export class SafeNatsDeserializer implements ConsumerDeserializer {
  deserialize(
    value: Uint8Array,
    options?: { channel?: string; replyTo?: string },
  ): IncomingRequest {
    const channel = options?.channel ?? '';
    let decoded: unknown;
    try {
      decoded = JSON.parse(Buffer.from(value).toString('utf8'));
    } catch {
      return { id: 'malformed', pattern: channel, data: { [MALFORMED]: 'payload is not JSON' } };
    }
    const isPacket =
      typeof decoded === 'object' && decoded !== null && 'pattern' in decoded && 'data' in decoded;
    if (isPacket) {
      const p = decoded as { id?: unknown; pattern: unknown; data: unknown };
      // A request without an id would be taken for an event and never answered.
      const id = typeof p.id === 'string' ? p.id : options?.replyTo ? 'no-id' : undefined;
      return { id: id as string, pattern: channel, data: p.data };
    }
    // A bare JSON payload from a foreign client: treat it as the data of a request.
    return {
      id: (options?.replyTo ? 'external' : undefined) as string,
      pattern: channel,
      data: decoded,
    };
  }
}

/**
 * What the handler of one request asks of its reply. Nest replies with the handler's return
 * value (or its error) once; a ReplyControl lets the handler change that, for the message it
 * is handling only:
 *   drop()          no reply at all (the caller times out)
 *   copies(n)       the reply is sent n times (n ≥ 1; the caller takes the first)
 *   holdUntil(p)    the reply waits until p settles (resolved or rejected), then goes
 * Invariants: copies ≥ 1; after drop() nothing is ever sent for this message, whatever else
 * is asked; holds only delay, they never cancel.
 */
export class ReplyControl {
  /**
   * Where the caller waits (the request's NATS reply subject and packet id): whoever finishes
   * the request for a replica that died handling it answers there (apps/mm orphan_ranges.ts).
   */
  origin?: { to: string; id: string };
  /** the subject the request arrived on (an actor RPC's names who sent it: checkActor) */
  subject?: string;
  private dropped = false;
  private n = 1;
  private readonly holds: Array<Promise<unknown>> = [];

  drop(): void {
    this.dropped = true;
  }

  copies(n: number): void {
    this.n = Math.max(1, Math.floor(n));
  }

  holdUntil(p: Promise<unknown>): void {
    // Settled either way: a hold that fails still lets the reply go (and is never unhandled).
    this.holds.push(
      p.then(
        () => undefined,
        () => undefined,
      ),
    );
  }

  get isDropped(): boolean {
    return this.dropped;
  }

  get copiesToSend(): number {
    return this.n;
  }

  /** Send one reply through publish, as asked: after the holds, n times, or not at all. */
  async send(publish: () => unknown): Promise<void> {
    // A hold added while waiting for the others is waited for too.
    for (let i = 0; i < this.holds.length; i++) await this.holds[i];
    if (this.dropped) return;
    for (let i = 0; i < this.n; i++) publish();
  }
}

const replyScope = new AsyncLocalStorage<ReplyControl>();

/**
 * How long a stopping service lets the requests it has in flight answer before it refuses
 * them (MmlabServerNats.close). A restart SIGKILLs 3 s after its SIGTERM (stopProcess): this,
 * plus mm's wait for its open invalidations, stays below that.
 */
export const SHUTDOWN_GRACE_MS = 1500;

/** The ReplyControl of the request being handled here (undefined: not inside a request). */
export function currentReply(): ReplyControl | undefined {
  return replyScope.getStore();
}

/** Run fn as the handler of a request whose reply `control` governs (MmlabServerNats; tests). */
export function runWithReply<T>(control: ReplyControl, fn: () => T): T {
  return replyScope.run(control, fn);
}

/**
 * Nest's ServerNats, with every message handled inside its own ReplyControl. handleMessage and
 * getPublisher are wrapped, nothing else: the deserializer, the queue groups, the handlers,
 * filters and the reply packets are Nest's. getPublisher is called by handleMessage, in the
 * message's async context, before the handler runs; the publisher it returns is called once
 * the handler's result (or error) is known — by then the handler has said what it wants.
 */
export class MmlabServerNats extends ServerNats {
  /** Requests taken and not answered yet (each by its ReplyControl); see close(). */
  private readonly inFlight = new Map<ReplyControl, InFlightRequest>();
  private readonly settledListeners = new Set<() => void>();

  /** The raw subscriptions of the fast handlers (fastRpc), drained on close like Nest's. */
  private readonly fastSubs: Subscription[] = [];
  private readonly decoder = new SafeNatsDeserializer();

  constructor(
    options: ConstructorParameters<typeof ServerNats>[0],
    /** how long close() lets the requests in flight finish before it refuses them */
    private readonly shutdownGraceMs = SHUTDOWN_GRACE_MS,
    /** subjects served on a raw subscription of this connection, past Nest's router (fastRpc) */
    private readonly fast: readonly FastHandler[] = [],
  ) {
    super(options);
  }

  /** Nest's subscriptions, then one raw subscription per fast handler (same queue groups). */
  override bindEvents(client: Parameters<ServerNats['bindEvents']>[0]): void {
    super.bindEvents(client);
    const nc = client as NatsConnection;
    for (const h of this.fast)
      this.fastSubs.push(
        nc.subscribe(h.subject, {
          ...(h.queue ? { queue: h.queue } : {}),
          callback: (err, msg) => {
            if (!err) void this.serveFast(h, msg);
          },
        }),
      );
  }

  /**
   * One request to a fast handler, answered as Nest answers (the same reply packet, the same
   * error envelope, the same decoding of bad bytes: SafeNatsDeserializer, parseRequest), inside
   * its own ReplyControl and counted in flight, so close() treats it as any other request.
   */
  private async serveFast(h: FastHandler, msg: Msg): Promise<void> {
    if (!msg.reply) return; // published without a reply subject: nobody to answer (Nest: an event nobody handles)
    const req = this.decoder.deserialize(msg.data, { channel: h.subject, replyTo: msg.reply });
    const id = typeof req.id === 'string' ? req.id : 'no-id';
    const control = new ReplyControl();
    control.origin = { to: msg.reply, id };
    control.subject = msg.subject;
    const publish = (packet: unknown) => msg.respond(JSON.stringify({ ...(packet as object), id }));
    this.inFlight.set(control, { subject: msg.subject, publish });
    try {
      await runWithReply(control, async () => {
        let packet: object;
        try {
          packet = { response: await runFastHandler(h, req.data, msg.headers), isDisposed: true };
        } catch (e) {
          packet = { err: MmlabError.wrap(e).toWire(), isDisposed: true };
        }
        await control.send(() => publish(packet));
      });
    } catch {
      // the connection went away under the reply: nobody to tell
    } finally {
      this.settle(control);
    }
  }

  override handleMessage(channel: string, natsMsg: Msg): Promise<unknown> {
    const control = new ReplyControl();
    control.subject = natsMsg.subject;
    if (natsMsg.reply) {
      let id: unknown;
      try {
        id = (JSON.parse(natsMsg.string()) as { id?: unknown }).id;
      } catch {
        id = undefined;
      }
      if (typeof id === 'string') control.origin = { to: natsMsg.reply, id };
      this.inFlight.set(control, { subject: natsMsg.subject });
    }
    const handled = runWithReply(control, () => super.handleMessage(channel, natsMsg));
    // a message that never reaches a publisher (it could not even be dispatched) is not in flight
    return handled.catch((e: unknown) => {
      this.settle(control);
      throw e;
    });
  }

  override getPublisher(
    natsMsg: Msg,
    id: string,
    ctx: Parameters<ServerNats['getPublisher']>[2],
  ): (response: unknown) => unknown {
    const publish = super.getPublisher(natsMsg, id, ctx) as (response: unknown) => unknown;
    const control = replyScope.getStore();
    if (!control || !natsMsg.reply) return publish;
    const entry = this.inFlight.get(control);
    if (entry) entry.publish = publish;
    return (response) => control.send(() => publish(response)).finally(() => this.settle(control));
  }

  /** Requests taken and not answered yet. */
  get pending(): number {
    return this.inFlight.size;
  }

  private settle(control: ReplyControl): void {
    if (!this.inFlight.delete(control)) return;
    for (const l of this.settledListeners) l();
  }

  /** Until nothing (on a matching subject) is in flight, or ms passed; true when nothing is. */
  private async settled(
    ms: number,
    match: (subject: string) => boolean = () => true,
  ): Promise<boolean> {
    const idle = () => ![...this.inFlight.values()].some((r) => match(r.subject));
    if (idle()) return true;
    let timer: NodeJS.Timeout | undefined;
    let listener: (() => void) | undefined;
    try {
      return await new Promise<boolean>((resolve) => {
        listener = () => {
          if (idle()) resolve(true);
        };
        this.settledListeners.add(listener);
        timer = setTimeout(() => resolve(idle()), ms);
      });
    } finally {
      clearTimeout(timer);
      if (listener) this.settledListeners.delete(listener);
    }
  }

  /**
   * A clean stop: nothing in flight goes unanswered.
   *
   *   1. stop taking requests: drain every subscription (the server stops delivering, what it
   *      already sent is still handled; a queue group's other members take the new ones);
   *   2. let the requests in flight answer, for up to shutdownGraceMs;
   *   3. answer each one still running ESHUTDOWN (not definite: part of it may have happened),
   *      and drop the handler's own reply should it come later;
   *   4. flush, and close the connection (Nest's close).
   *
   * Before, the connection was closed under the requests in flight: their callers waited for
   * their whole timeout and learnt nothing (ETIMEDOUT).
   */
  override async close(): Promise<void> {
    let nc: NatsConnection | undefined;
    try {
      nc = this.unwrap<NatsConnection>();
    } catch {
      return super.close(); // never listened
    }
    await this.drainWhere(() => true);
    await nc.flush().catch(() => undefined);
    return super.close();
  }

  /**
   * Step 1-3 of close() for the subjects `keep` refuses only: those stop being taken, their
   * requests in flight answer (or get ESHUTDOWN past the grace); the kept subjects are still
   * served. A notifier subscriber stops taking its clients' requests this way, then unregisters
   * while it still answers its callbacks (mm sends it release, and the ends of the
   * invalidations it acked), and close() drains the rest.
   */
  async stopTaking(keep: (subject: string) => boolean): Promise<void> {
    try {
      this.unwrap<NatsConnection>();
    } catch {
      return; // never listened
    }
    await this.drainWhere((subject) => !keep(subject));
  }

  /** Drain the subscriptions on matching subjects; their requests in flight answer or fail. */
  private async drainWhere(match: (subject: string) => boolean): Promise<void> {
    // Nest keeps its subscriptions private; draining them is the one way to stop taking
    // requests without losing one already on its way to this process.
    const subs = [
      ...((this as unknown as { subscriptions?: Subscription[] }).subscriptions ?? []),
      ...this.fastSubs,
    ].filter((sub) => match(sub.getSubject()));
    await Promise.all(subs.map((sub) => sub.drain().catch(() => undefined)));
    if (!(await this.settled(this.shutdownGraceMs, match))) {
      for (const [control, r] of [...this.inFlight]) {
        if (!match(r.subject)) continue;
        control.drop();
        const e = new MmlabError(
          'ESHUTDOWN',
          `${r.subject}: the service stopped before it finished (after ${this.shutdownGraceMs} ms); part of it may have happened`,
        );
        try {
          r.publish?.({ err: e.toWire(), isDisposed: true });
        } catch {
          // the connection is already gone: nobody to tell
        }
        this.settle(control);
      }
    }
  }
}

/** A request a service took: where it came on, and how to answer it (once known). */
interface InFlightRequest {
  subject: string;
  /** Nest's publisher for its reply, bypassing the ReplyControl */
  publish?: (response: unknown) => unknown;
}

/** How much of a schema's complaint an EBADMSG carries: a bounded reply, whatever was sent. */
const MAX_ISSUES = 10;
const MAX_WHY = 2000;
const clip = (s: string, n: number): string => (s.length > n ? `${s.slice(0, n)}…` : s);

/** Arrays longer than this are checked element by element first, stopping at the first bad one. */
const LONG_ARRAY = 256;

interface SchemaDef {
  type: string;
  shape?: Record<string, z.ZodType>;
  element?: z.ZodType;
  innerType?: z.ZodType;
}
const defOf = (s: z.ZodType): SchemaDef => (s as unknown as { _zod: { def: SchemaDef } })._zod.def;

/**
 * The first bad element of a long array of data (where schema has an array), or undefined.
 * zod reports every bad element, several microseconds each: a 1 MiB request of 500,000 bad
 * elements kept an mm replica busy for 5-8 s, long enough to lose its liveness lease and be
 * reaped as dead. Checked here one element at a time, a bad request costs one issue.
 */
function firstBadElement(schema: z.ZodType, data: unknown, where: string): string | undefined {
  const d = defOf(schema);
  if ((d.type === 'optional' || d.type === 'default') && d.innerType)
    return firstBadElement(d.innerType, data, where);
  if (d.type === 'object' && d.shape && typeof data === 'object' && data !== null)
    for (const [k, v] of Object.entries(d.shape)) {
      const bad = firstBadElement(v, (data as Record<string, unknown>)[k], `${where} ${k}`);
      if (bad) return bad;
    }
  if (d.type === 'array' && d.element && Array.isArray(data) && data.length > LONG_ARRAY)
    for (let i = 0; i < data.length; i++) {
      const r = d.element.safeParse(data[i]);
      if (!r.success)
        return clip(`${where}[${i}]: ${r.error.issues[0]?.message ?? 'invalid'}`, MAX_WHY);
    }
  return undefined;
}

export function parseRequest<N extends RpcName>(name: N, data: unknown): ReqParsed<N> {
  const d = RPC[name];
  if (MalformedData.safeParse(data).success)
    throw new MmlabError('EBADMSG', `${d.subject}: ${(data as Record<string, string>)[MALFORMED]}`);
  const long = firstBadElement(d.request, data, d.subject);
  if (long) throw new MmlabError('EBADMSG', long);
  const r = d.request.safeParse(data);
  if (!r.success) {
    const why = r.error.issues
      .slice(0, MAX_ISSUES)
      .map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`)
      .join('; ');
    const more =
      r.error.issues.length > MAX_ISSUES ? ` (and ${r.error.issues.length - MAX_ISSUES} more)` : '';
    // a request of 100,000 unknown keys made a message as long (past max_payload: no reply
    // could be sent, the caller timed out)
    throw new MmlabError('EBADMSG', `${d.subject}: ${clip(why, MAX_WHY)}${more}`);
  }
  return r.data as ReqParsed<N>;
}

const toRpcException = (e: unknown): RpcException => new RpcException(MmlabError.wrap(e).toWire());

/**
 * A request that acts for an identity (RpcDef.actor) must name the identity it was sent as: the
 * one in its subject (mmlab.mm.by.<as>.…), which NATS lets only <as> and the lab publish on
 * (libs/protocol permissions.ts). A device claiming another's pins or registrations in the
 * request is refused here, before its handler runs: EPERM, nothing changed.
 */
export function checkActor<N extends RpcName>(
  name: N,
  subject: string | undefined,
  req: ReqParsed<N>,
): void {
  const d = RPC[name];
  if (!d.actor) return;
  const sentAs = subject === undefined ? undefined : actorOfSubject(d, subject);
  const claims = actorOf(d, req);
  if (sentAs === undefined || claims !== sentAs)
    throw new MmlabError(
      'EPERM',
      `${subject ?? d.subject}: the request acts for ${String(claims)} but was sent as ${sentAs ?? 'nobody'}`,
    );
}

/** The NATS headers of a received message, from Nest's NatsContext. */
function headersOf(ctx: unknown): MsgHdrs | undefined {
  if (typeof ctx !== 'object' || ctx === null || !('getHeaders' in ctx)) return undefined;
  const getHeaders = ctx.getHeaders;
  if (typeof getHeaders !== 'function') return undefined;
  const h = (getHeaders as () => unknown).call(ctx);
  return typeof h === 'object' && h !== null && 'get' in h ? (h as MsgHdrs) : undefined;
}

/** The SERVER span of one request handled on subject (Nest's path and the fast one alike). */
function serverSpanOptions(subject: string, name: RpcName): SpanOptions {
  return {
    kind: SpanKind.SERVER,
    attributes: {
      'messaging.system': 'nats',
      'messaging.destination.name': subject,
      'rpc.system': 'nats',
      'rpc.method': name,
      'mmlab.instance': telemetryIdentity().instance,
    },
  };
}

/**
 * A subject served on a raw NATS subscription instead of through Nest's router (fastRpc): the
 * hot subjects of the fault path (mmlab.mm.fault, a CPU's flush_tlb), where Nest's transport,
 * rxjs and context creation cost more than the work. What the caller sees is the same: the
 * request schema checked (EBADMSG, nothing run), the reply packet and error envelope of Nest's
 * transport, the queue group, the SERVER span, the drain and ESHUTDOWN of close().
 */
export interface FastHandler {
  name: RpcName;
  subject: string;
  queue?: string;
  /** the request, already checked against its schema → the reply (thrown: a typed error) */
  run(req: unknown): Promise<unknown>;
}

/** RPC[name] (on instance id's subject) answered by handler on a raw subscription. */
export function fastRpc<N extends RpcName>(
  name: N,
  id: string | number | undefined,
  handler: (req: ReqParsed<N>) => Promise<Res<N>> | Res<N>,
): FastHandler {
  const d = RPC[name];
  return {
    name,
    subject: subjectFor(d, id, '*'),
    ...(d.queue ? { queue: d.queue } : {}),
    run: async (req) => {
      checkActor(name, currentReply()?.subject, req as ReqParsed<N>);
      return handler(req as ReqParsed<N>);
    },
  };
}

/** Check the request, run the handler (in its SERVER span when telemetry is on). */
function runFastHandler(
  h: FastHandler,
  data: unknown,
  headers: MsgHdrs | undefined,
): Promise<unknown> {
  const serve = () => h.run(parseRequest(h.name, data));
  if (!telemetryEnabled()) return serve();
  return inSpan(
    h.subject,
    () => serverSpanOptions(h.subject, h.name),
    serve,
    extractTraceContext(headers),
  );
}

/**
 * `@Rpc('fault')`: this method answers RPC.fault. The method receives the parsed request.
 * `id` selects the instance for per-instance subjects (`mmlab.cpu.{id}.access`).
 * With telemetry on, the handler runs in a SERVER span named after the subject, child of the
 * caller's span when the request carried a `traceparent` header.
 */
export function Rpc(name: RpcName, id?: string | number): MethodDecorator {
  const d = RPC[name];
  const subject = subjectFor(d, id, '*');
  return (target, key, desc: PropertyDescriptor) => {
    const handler = desc.value as (req: unknown, ctx: unknown) => unknown;
    const serve = async (self: unknown, data: unknown, ctx: unknown) => {
      try {
        const req = parseRequest(name, data);
        checkActor(name, currentReply()?.subject, req);
        return await handler.call(self, req, ctx);
      } catch (e) {
        throw toRpcException(e);
      }
    };
    desc.value = function (this: unknown, data: unknown, ctx: unknown) {
      if (!telemetryEnabled()) return serve(this, data, ctx);
      return inSpan(
        subject,
        () => serverSpanOptions(subject, name),
        () => serve(this, data, ctx),
        extractTraceContext(headersOf(ctx)),
      );
    };
    Object.defineProperty(desc.value, 'name', { value: String(key) });
    MessagePattern(subject, Transport.NATS, d.queue ? { queue: d.queue } : {})(target, key, desc);
    // Nest passes a handler only its payload unless its parameters are declared: declare the
    // NatsContext as the second (for the headers), only when telemetry can be on in this
    // process, so that without it Nest's call path stays exactly what it was.
    if (otlpConfigured()) {
      Payload()(target, key, 0);
      Ctx()(target, key, 1);
    }
  };
}

/** Safety net for whatever escapes a handler (guards, interceptors): still a typed error. */
@Catch()
export class WireErrorFilter implements RpcExceptionFilter<unknown> {
  private readonly log = new Logger('WireErrorFilter');
  catch(exception: unknown): Observable<WireError> {
    if (exception instanceof RpcException) {
      const e = exception.getError();
      if (typeof e === 'object' && e !== null && 'code' in e)
        return throwError(() => e as WireError);
    }
    const w = MmlabError.wrap(exception);
    if (w.code === 'EINTERNAL') this.log.error(exception);
    return throwError(() => w.toWire());
  }
}

/** ping, config and flush, answered by every instance of every service. */
export function controlController(tracer: Tracer): Type<unknown> {
  @Controller()
  class ControlController {
    @Rpc('ping')
    ping() {
      return { service: tracer.service, instance: tracer.instance };
    }

    /** The environment this process parsed at start-up (it cannot change while it runs). */
    @Rpc('config')
    config() {
      const env = loadEnv();
      return {
        service: tracer.service,
        instance: tracer.instance,
        mode: env.MMLAB_MODE,
        frames: env.MMLAB_FRAMES,
        swapSlots: env.MMLAB_SWAP_SLOTS,
        thp: env.MMLAB_THP,
        hugePageOrder: env.MMLAB_HUGE_PAGE_ORDER,
        hugetlbPages: env.MMLAB_HUGETLB_PAGES,
        watermarks: { low: env.MMLAB_WATERMARK_LOW, high: env.MMLAB_WATERMARK_HIGH },
        leaseTtlMs: env.MMLAB_LEASE_TTL_MS,
        softlockupMs: env.MMLAB_SOFTLOCKUP_MS,
        dispatch: env.MMLAB_DISPATCH,
        inject: env.MMLAB_INJECT,
        callbackTimeoutMs: env.MMLAB_CALLBACK_TIMEOUT_MS,
        subscriberLeaseMs: env.MMLAB_SUBSCRIBER_LEASE_MS,
        invalidateLatency: env.MMLAB_INVALIDATE_LATENCY,
        npfDelayMs: env.MMLAB_NPF_DELAY_MS,
        ...(tracer.service === 'kvm' && { mmuLock: env.MMLAB_MMU_LOCK }),
        // the default as mm applies it (apps/mm/src/kernel/gup.ts)
        memlockPages: env.MMLAB_MEMLOCK_PAGES ?? Math.floor(env.MMLAB_FRAMES / 4),
      };
    }

    @Rpc('flush')
    async flush() {
      await tracer.flush();
      return {
        service: tracer.service,
        instance: tracer.instance,
        published: tracer.published,
        replays: { asked: tracer.replaysAsked, run: tracer.replaysRun },
      };
    }
  }
  return ControlController;
}

export interface StartOptions {
  natsUrl: string;
  name: string;
  /** subjects served past Nest's router, on raw subscriptions of the same connection (fastRpc) */
  fast?: readonly FastHandler[];
  /** given the transport once made (a subscriber's shutdown calls its stopTaking) */
  onServer?: (server: MmlabServerNats) => void;
}

/**
 * Create and start a Nest microservice on the NATS transport (MmlabServerNats: Nest's, with a
 * ReplyControl per message) with the lab's conventions.
 * With `http` and a non-zero http.port, a hybrid app: the same microservice, plus /metrics
 * and /health over HTTP on that port (http.ts).
 */
export function startMicroservice(
  module: Type<unknown> | DynamicModule,
  opts: StartOptions,
): Promise<INestMicroservice>;
export function startMicroservice(
  module: Type<unknown> | DynamicModule,
  opts: StartOptions,
  http: HttpSideOptions | undefined,
): Promise<INestMicroservice | INestApplication>;
export async function startMicroservice(
  module: Type<unknown> | DynamicModule,
  opts: StartOptions,
  http?: HttpSideOptions,
): Promise<INestMicroservice | INestApplication> {
  installCrashGuards(opts.name);
  const server = new MmlabServerNats(
    {
      ...natsServerOptions(opts.natsUrl),
      ...NATS_COMMON_OPTIONS,
      name: opts.name,
      deserializer: new SafeNatsDeserializer(),
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
    },
    SHUTDOWN_GRACE_MS,
    opts.fast ?? [],
  );
  opts.onServer?.(server);
  const transport: MicroserviceOptions = { strategy: server };
  const logger: LogLevel[] = ['error', 'warn', 'log'];
  if (http && http.port > 0)
    return startHybridApp(module, transport, [new WireErrorFilter()], logger, http);
  const app = await NestFactory.createMicroservice<MicroserviceOptions>(module, {
    ...transport,
    logger,
  });
  app.useGlobalFilters(new WireErrorFilter());
  // No enableShutdownHooks(): runService owns SIGTERM, and its cleanups close the app in order
  // (Nest's own hook would close it at once, under the requests in flight, and re-raise).
  await app.listen();
  return app;
}

let guarded = false;
/** A message must never take a service down: log what escaped instead of dying. */
export function installCrashGuards(name: string): void {
  if (guarded) return;
  guarded = true;
  const log = new Logger(name);
  process.on('unhandledRejection', (e) => log.error(`unhandled rejection: ${String(e)}`));
}

/**
 * How long a service may take to stop once signalled before it exits anyway: under 5 s, the
 * SIGKILL deadline of a supervisor's stop (issue 15: every service exits 0 within 5 s of its
 * SIGTERM). Each service's cleanups fit well inside it (mm: SHUTDOWN_GRACE_MS for its
 * requests, then up to 1 s for its invalidations; a subscriber: the grace for its clients' requests,
 * its unregistrations, then the grace for its callbacks). Reached, it exits 1: something hung.
 */
export const SHUTDOWN_DEADLINE_MS = 4500;

/** Who a service process is, for telemetry. */
export interface ServiceIdentity {
  /** service.name (default: the app whose main.js is running, dist/apps/<app>/src/main.js) */
  service?: string;
  /** service.instance.id (default: MMLAB_INSTANCE, else <service>-<pid>) */
  instance?: string;
  /** false: never load the OpenTelemetry SDK in this process (default true: when configured) */
  telemetry?: boolean;
}

/** The app of the running entry point: dist/apps/<app>/src/main.js → <app>. */
export function serviceOfEntry(entry: string | undefined = process.argv[1]): string {
  return /[\\/]apps[\\/]([^\\/]+)[\\/]src[\\/]main\.[jt]s$/.exec(entry ?? '')?.[1] ?? 'mmlab';
}

/**
 * A service's process life: set up telemetry (a no-op unless an OTLP endpoint is configured),
 * run main; on SIGTERM or SIGINT, run the cleanups it registered (in order; one that fails is
 * logged), export the spans still queued, and exit 0 — or 1 at SHUTDOWN_DEADLINE_MS if one of
 * them hangs; if main fails, print why and exit 1.
 */
export function runService(
  main: (onShutdown: (cleanup: () => unknown) => void) => Promise<void>,
  who: ServiceIdentity = {},
): void {
  const cleanups: Array<() => unknown> = [];
  const service = who.service ?? serviceOfEntry();
  const instance = who.instance ?? process.env.MMLAB_INSTANCE ?? `${service}-${process.pid}`;
  let stopping = false;
  const shutdown = async () => {
    // Once only. The listeners stay registered: Nest's own shutdown hook re-raises the signal
    // when it is done with the app, which must not kill us before the cleanups and the span
    // export below have finished.
    if (stopping) return;
    stopping = true;
    // Still exit if a cleanup hangs (1: the stop was not clean).
    let step = 0;
    setTimeout(() => {
      new Logger(instance).error(
        `shutdown: cleanup ${step + 1} of ${cleanups.length} still running after ${SHUTDOWN_DEADLINE_MS} ms`,
      );
      process.exit(1);
    }, SHUTDOWN_DEADLINE_MS).unref();
    for (const [i, c] of cleanups.entries()) {
      step = i;
      try {
        await c();
      } catch (e) {
        new Logger(instance).warn(`shutdown: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    await shutdownTelemetry();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown());
  process.on('SIGINT', () => void shutdown());
  (who.telemetry === false ? Promise.resolve(false) : initTelemetry(service, instance))
    .catch((e: unknown) => {
      // Telemetry is a view: a service without it still serves.
      new Logger(instance).warn(
        `telemetry disabled: ${e instanceof Error ? e.message : String(e)}`,
      );
      return false;
    })
    .then(() => main((c) => cleanups.push(c)))
    .catch((e: unknown) => {
      console.error(e);
      process.exit(1);
    });
}
