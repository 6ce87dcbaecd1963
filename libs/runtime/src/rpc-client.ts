/**
 * Calls another service over NATS, one round trip, speaking Nest's packet envelope so that the
 * server side can be an ordinary `@MessagePattern` controller. The request is validated before
 * it leaves, the reply when it arrives; every failure is an MmlabError with a wire code. With
 * telemetry on, the active trace context travels in the request's NATS headers (`traceparent`).
 */
import { randomUUID } from 'node:crypto';
import {
  type MsgHdrs,
  type NatsConnection,
  RequestStrategy,
  ErrorCode as NatsErrorCode,
  NatsError,
  headers as natsHeaders,
} from 'nats';
import {
  MmlabError,
  RPC,
  ReplyPacket,
  type Req,
  type Res,
  type RpcName,
  WireErrorSchema,
  actorOf,
  subjectFor,
} from '@mmlab/protocol';
import { injectTraceHeaders } from './otel';

export interface CallOptions {
  /** instance id for per-instance subjects (`mmlab.cpu.{id}.access`) */
  id?: string | number;
  timeoutMs?: number;
  headers?: Record<string, string>;
}

/** The request's NATS headers: the caller's own, plus the trace context when telemetry is on. */
function requestHeaders(extra?: Record<string, string>): MsgHdrs | undefined {
  let h: MsgHdrs | undefined;
  if (extra && Object.keys(extra).length) {
    h = natsHeaders();
    for (const [k, v] of Object.entries(extra)) h.set(k, v);
  }
  return injectTraceHeaders(h);
}

let counter = 0;
const prefix = randomUUID().slice(0, 8);

export function encodeRequest(subject: string, data: unknown): string {
  return JSON.stringify({ id: `${prefix}-${++counter}`, pattern: subject, data });
}

/** Decode one reply packet against the RPC's response schema. Throws MmlabError. */
export function decodeReply<N extends RpcName>(name: N, bytes: Uint8Array | string): Res<N> {
  let raw: unknown;
  try {
    raw = JSON.parse(typeof bytes === 'string' ? bytes : Buffer.from(bytes).toString('utf8'));
  } catch {
    throw new MmlabError('EBADMSG', `reply on ${RPC[name].subject} is not JSON`);
  }
  const pkt = ReplyPacket.safeParse(raw);
  if (!pkt.success)
    throw new MmlabError('EBADMSG', `reply on ${RPC[name].subject} is not a packet`);
  if (pkt.data.err !== undefined) {
    const w = WireErrorSchema.safeParse(pkt.data.err);
    if (w.success) throw MmlabError.fromWire(w.data);
    throw new MmlabError(
      'EINTERNAL',
      `untyped error from ${RPC[name].subject}: ${JSON.stringify(pkt.data.err)}`,
    );
  }
  const r = RPC[name].response.safeParse(pkt.data.response);
  if (!r.success)
    throw new MmlabError(
      'EBADMSG',
      `reply on ${RPC[name].subject} breaks its schema: ${r.error.message}`,
    );
  return r.data as Res<N>;
}

function natsFailure(err: unknown, subject: string): MmlabError {
  if (err instanceof NatsError) {
    const code: string = err.code;
    if (code === String(NatsErrorCode.Timeout))
      return new MmlabError('ETIMEDOUT', `no reply on ${subject}`);
    if (code === String(NatsErrorCode.NoResponders))
      return new MmlabError('ENOHANDLER', `nobody serves ${subject}`);
  }
  return MmlabError.wrap(err);
}

export class RpcClient {
  constructor(
    readonly nc: NatsConnection,
    private readonly defaultTimeoutMs = 5000,
  ) {}

  async call<N extends RpcName>(name: N, req: Req<N>, opts: CallOptions = {}): Promise<Res<N>> {
    const d = RPC[name];
    const parsed = d.request.safeParse(req);
    if (!parsed.success)
      throw new MmlabError('EBADMSG', `request for ${d.subject}: ${parsed.error.message}`);
    // an RPC acting for an identity goes out on that identity's subject (mmlab.mm.by.hca0.gup),
    // which NATS lets only that identity (and the lab) publish on
    const subject = subjectFor(d, opts.id, actorOf(d, parsed.data));
    const headers = requestHeaders(opts.headers);
    let msg;
    try {
      msg = await this.nc.request(subject, encodeRequest(subject, parsed.data), {
        timeout: opts.timeoutMs ?? this.defaultTimeoutMs,
        ...(headers ? { headers } : {}),
      });
    } catch (e) {
      throw natsFailure(e, subject);
    }
    return decodeReply(name, msg.data);
  }

  /** Broadcast a request and collect replies until `expect` arrived or the time is up. */
  async gather<N extends RpcName>(
    name: N,
    req: Req<N>,
    opts: { expect?: number; timeoutMs?: number } = {},
  ): Promise<Array<Res<N>>> {
    const d = RPC[name];
    const out: Array<Res<N>> = [];
    const headers = injectTraceHeaders();
    // noMux: nats.js's muxed requestMany ignores noAsyncTraces and formats a stack trace into
    // every error it ends with (no responders: a lab's services not up yet); in a process that
    // maps traces (launch.ts) the first one parsed the bundle's source map, most of a CPU-second.
    const it = await this.nc.requestMany(d.subject, encodeRequest(d.subject, req), {
      noMux: true,
      strategy: opts.expect ? RequestStrategy.Count : RequestStrategy.Timer,
      maxMessages: opts.expect,
      maxWait: opts.timeoutMs ?? 1000,
      ...(headers ? { headers } : {}),
    });
    try {
      for await (const m of it) {
        // A status message with no payload (e.g. no responders) ends the iteration.
        if (m.data.length === 0) break;
        out.push(decodeReply(name, m.data));
      }
    } catch (e) {
      if (!(e instanceof NatsError && e.code === String(NatsErrorCode.NoResponders)))
        throw natsFailure(e, d.subject);
    }
    return out;
  }
}
