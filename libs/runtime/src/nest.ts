/**
 * The Nest side of the wire contract: every handler is declared with `@Rpc(name)`, which
 * subscribes it to the subject from libs/protocol (with its queue group), validates what
 * arrives against the request schema, and turns anything thrown into a typed wire error.
 * A message that is not even JSON reaches the handler as MALFORMED and gets EBADMSG back.
 */
import {
  Catch,
  Controller,
  type DynamicModule,
  type RpcExceptionFilter,
  type INestMicroservice,
  Logger,
  type Type,
} from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import {
  type ConsumerDeserializer,
  type IncomingRequest,
  MessagePattern,
  type MicroserviceOptions,
  RpcException,
  Transport,
} from '@nestjs/microservices';
import { type Observable, throwError } from 'rxjs';
import {
  MALFORMED,
  MalformedData,
  MmlabError,
  RPC,
  type ReqParsed,
  type RpcName,
  type WireError,
  subjectFor,
} from '@mmlab/protocol';
import type { Tracer } from './tracer';

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

export function parseRequest<N extends RpcName>(name: N, data: unknown): ReqParsed<N> {
  const d = RPC[name];
  if (MalformedData.safeParse(data).success)
    throw new MmlabError('EBADMSG', `${d.subject}: ${(data as Record<string, string>)[MALFORMED]}`);
  const r = d.request.safeParse(data);
  if (!r.success) {
    const why = r.error.issues
      .map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`)
      .join('; ');
    throw new MmlabError('EBADMSG', `${d.subject}: ${why}`);
  }
  return r.data as ReqParsed<N>;
}

const toRpcException = (e: unknown): RpcException => new RpcException(MmlabError.wrap(e).toWire());

/**
 * `@Rpc('fault')`: this method answers RPC.fault. The method receives the parsed request.
 * `id` selects the instance for per-instance subjects (`mmlab.cpu.{id}.access`).
 */
export function Rpc(name: RpcName, id?: string | number): MethodDecorator {
  const d = RPC[name];
  return (target, key, desc: PropertyDescriptor) => {
    const handler = desc.value as (req: unknown, ctx: unknown) => unknown;
    desc.value = async function (this: unknown, data: unknown, ctx: unknown) {
      try {
        return await handler.call(this, parseRequest(name, data), ctx);
      } catch (e) {
        throw toRpcException(e);
      }
    };
    Object.defineProperty(desc.value, 'name', { value: String(key) });
    MessagePattern(subjectFor(d, id), Transport.NATS, d.queue ? { queue: d.queue } : {})(
      target,
      key,
      desc,
    );
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

/** ping and flush, answered by every instance of every service. */
export function controlController(tracer: Tracer): Type<unknown> {
  @Controller()
  class ControlController {
    @Rpc('ping')
    ping() {
      return { service: tracer.service, instance: tracer.instance };
    }

    @Rpc('flush')
    async flush() {
      await tracer.flush();
      return { service: tracer.service, instance: tracer.instance, published: tracer.published };
    }
  }
  return ControlController;
}

export interface StartOptions {
  natsUrl: string;
  name: string;
}

/** Create and start a Nest microservice on the NATS transport with the lab's conventions. */
export async function startMicroservice(
  module: Type<unknown> | DynamicModule,
  opts: StartOptions,
): Promise<INestMicroservice> {
  installCrashGuards(opts.name);
  const app = await NestFactory.createMicroservice<MicroserviceOptions>(module, {
    transport: Transport.NATS,
    options: {
      servers: opts.natsUrl,
      name: opts.name,
      deserializer: new SafeNatsDeserializer(),
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
    },
    logger: ['error', 'warn', 'log'],
  });
  app.useGlobalFilters(new WireErrorFilter());
  app.enableShutdownHooks();
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
 * A service's process life: run main; on SIGTERM or SIGINT, run the cleanups it registered
 * (in order) and exit 0; if main fails, print why and exit 1.
 */
export function runService(
  main: (onShutdown: (cleanup: () => unknown) => void) => Promise<void>,
): void {
  const cleanups: Array<() => unknown> = [];
  const shutdown = async () => {
    for (const c of cleanups) await c();
    process.exit(0);
  };
  process.once('SIGTERM', () => void shutdown());
  process.once('SIGINT', () => void shutdown());
  main((c) => cleanups.push(c)).catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
}
