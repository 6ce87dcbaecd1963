/**
 * The HTTP side of every service: `GET /metrics` (Prometheus text format, from the process's
 * LabMetrics) and `GET /health` (Terminus: the service's own NATS connection is open and
 * connected, and its Redis client answers PING). A failed check answers 503 with the details
 * of every check; `status` is `ok` or `error`, as Terminus has it.
 *
 * mm, cpu and hca become hybrid apps (HTTP on MMLAB_HTTP_PORT beside the NATS microservice)
 * through `startMicroservice(module, opts, http)`; the observer imports ServiceHttpModule into
 * its own HTTP app.
 */
import {
  Controller,
  type DynamicModule,
  type ExceptionFilter,
  Get,
  Inject,
  type INestApplication,
  type LogLevel,
  Logger,
  Module,
  Res,
  type Type,
} from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { type MicroserviceOptions, NestMicroservice } from '@nestjs/microservices';
import {
  HealthCheck,
  HealthCheckService,
  type HealthIndicatorFunction,
  HealthIndicatorService,
  TerminusModule,
} from '@nestjs/terminus';
import { Events, type NatsConnection } from 'nats';
import { useLabHttpErrors } from './http-errors';
import { type LabMetrics, processMetrics } from './metrics';
import type { Tracer } from './tracer';

/** The state of a NATS link, as /health reports it. */
export interface NatsLinkState {
  up: boolean;
  /** connected, disconnected (reconnecting), draining or closed */
  state: 'connected' | 'disconnected' | 'draining' | 'closed';
}
export type NatsProbe = () => NatsLinkState;

/** What /health needs of a Redis client (ioredis Redis and Cluster both have it). */
export interface RedisLike {
  readonly status: string;
  ping(): Promise<string>;
}

export interface ServiceHttpOptions {
  metrics: LabMetrics;
  /** the service's own connection (watched from now on), or a probe of it */
  nats: NatsConnection | NatsProbe;
  /** checked with PING; absent: /health does not check Redis (the observer has none) */
  redis?: RedisLike;
  /** how long a PING may take before Redis counts as down (default 1000 ms) */
  redisTimeoutMs?: number;
}

/**
 * Follow a connection's status: the nats client keeps the connection object open while it
 * reconnects, so isClosed() alone does not see a server that went away.
 */
export function natsProbe(nc: NatsConnection): NatsProbe {
  let linkUp = true;
  void (async () => {
    try {
      for await (const s of nc.status()) {
        if (s.type === Events.Disconnect) linkUp = false;
        else if (s.type === Events.Reconnect) linkUp = true;
      }
    } catch {
      // the iterator ends with the connection; isClosed() says so from then on
    }
  })();
  return () => {
    if (nc.isClosed()) return { up: false, state: 'closed' };
    if (nc.isDraining()) return { up: false, state: 'draining' };
    return linkUp ? { up: true, state: 'connected' } : { up: false, state: 'disconnected' };
  };
}

/** PING with a deadline: the lab's clients queue commands while disconnected, forever. */
export async function pingRedis(
  redis: RedisLike,
  timeoutMs: number,
): Promise<{ up: true } | { up: false; state: string; message: string }> {
  if (redis.status !== 'ready')
    return { up: false, state: redis.status, message: `client is ${redis.status}` };
  let timer: NodeJS.Timeout | undefined;
  try {
    const reply = await Promise.race([
      redis.ping(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no PONG in ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
    return reply === 'PONG'
      ? { up: true }
      : { up: false, state: redis.status, message: `PING answered ${reply}` };
  } catch (e) {
    return { up: false, state: redis.status, message: e instanceof Error ? e.message : String(e) };
  } finally {
    clearTimeout(timer);
  }
}

const HTTP_SIDE = Symbol('MMLAB_HTTP_SIDE');

interface Resolved {
  metrics: LabMetrics;
  nats: NatsProbe;
  redis: RedisLike | undefined;
  redisTimeoutMs: number;
}

/** What /metrics needs of the response (platform-express's Response is a node ServerResponse). */
interface RawResponse {
  setHeader(name: string, value: string): unknown;
  end(body: string): unknown;
}

@Controller()
class MetricsController {
  constructor(@Inject(HTTP_SIDE) private readonly o: Resolved) {}

  /** Written raw: Express's send() would rewrite the registry's content type. */
  @Get('metrics')
  async metrics(@Res() res: RawResponse): Promise<void> {
    const body = await this.o.metrics.render();
    res.setHeader('Content-Type', this.o.metrics.contentType);
    res.end(body);
  }
}

@Controller()
class HealthController {
  constructor(
    private readonly health: HealthCheckService,
    private readonly indicator: HealthIndicatorService,
    @Inject(HTTP_SIDE) private readonly o: Resolved,
  ) {}

  @Get('health')
  @HealthCheck({ swaggerDocumentation: false })
  check() {
    const checks: HealthIndicatorFunction[] = [
      () => {
        const s = this.o.nats();
        const i = this.indicator.check('nats');
        return s.up ? i.up({ state: s.state }) : i.down({ state: s.state });
      },
    ];
    const redis = this.o.redis;
    if (redis)
      checks.push(async () => {
        const r = await pingRedis(redis, this.o.redisTimeoutMs);
        const i = this.indicator.check('redis');
        return r.up ? i.up() : i.down({ state: r.state, message: r.message });
      });
    return this.health.check(checks);
  }
}

@Module({})
export class ServiceHttpModule {
  static register(o: ServiceHttpOptions): DynamicModule {
    const resolved: Resolved = {
      metrics: o.metrics,
      nats: typeof o.nats === 'function' ? o.nats : natsProbe(o.nats),
      redis: o.redis,
      redisTimeoutMs: o.redisTimeoutMs ?? 1000,
    };
    return {
      module: ServiceHttpModule,
      imports: [TerminusModule.forRoot({ errorLogStyle: 'pretty' })],
      controllers: [MetricsController, HealthController],
      providers: [{ provide: HTTP_SIDE, useValue: resolved }],
    };
  }
}

/** The optional HTTP side of startMicroservice. */
export interface HttpSideOptions {
  /** MMLAB_HTTP_PORT; 0: no HTTP side at all (a plain NATS microservice, as before) */
  port: number;
  /** MMLAB_HTTP_HOST; default 127.0.0.1 (this machine only) */
  host?: string;
  /** the service's tracer: every event it emits feeds the metrics */
  tracer: Tracer;
  /** the service's own NATS connection, for /health */
  nats: NatsConnection;
  /** the service's Redis client, for /health */
  redis?: RedisLike;
  /** default: processMetrics() */
  metrics?: LabMetrics;
  /** the service's own scrape-time metrics (mm: frames free) */
  extraMetrics?: (m: LabMetrics) => void;
}

@Module({})
class HybridRootModule {}

/**
 * One Nest app serving `module` on NATS and ServiceHttpModule over HTTP on http.port.
 * `transport` and `rpcFilters` are the microservice's, as startMicroservice builds them; the
 * filters go on the microservice only (an RPC catch-all on the HTTP side would answer HTTP
 * errors with an Observable, that is, not at all).
 */
export async function startHybridApp(
  module: Type<unknown> | DynamicModule,
  transport: MicroserviceOptions,
  rpcFilters: ExceptionFilter[],
  logger: LogLevel[],
  http: HttpSideOptions,
): Promise<INestApplication> {
  const metrics = http.metrics ?? processMetrics();
  metrics.tapTracer(http.tracer);
  http.extraMetrics?.(metrics);
  const root: DynamicModule = {
    module: HybridRootModule,
    imports: [module, ServiceHttpModule.register({ metrics, nats: http.nats, redis: http.redis })],
  };
  const app = await NestFactory.create(root, { logger, abortOnError: false });
  const host = http.host ?? '127.0.0.1';
  try {
    // typed refusals (Nest's own 404s, body-parser's 400/413/415, Node's parser errors) and,
    // on loopback, requests to this machine's names only: as the observer and the lab API
    useLabHttpErrors(app, host);
    // Deferred, so the filters are in the microservice's config before its handlers are bound.
    const ms = app.connectMicroservice<MicroserviceOptions>(transport, {
      deferInitialization: true,
    });
    ms.useGlobalFilters(...rpcFilters);
    await app.init();
    // app.init() already ran the modules' init hooks; the deferred microservice would run them again.
    if (ms instanceof NestMicroservice) ms.setIsInitHookCalled(true);
    // no enableShutdownHooks(): runService owns the signals (see startMicroservice)
    await app.startAllMicroservices();
    await app.listen(http.port, host);
    new Logger('ServiceHttp').log(`GET /metrics and /health on http://${host}:${http.port}`);
    return app;
  } catch (e) {
    await app.close().catch(() => undefined);
    throw e;
  }
}
