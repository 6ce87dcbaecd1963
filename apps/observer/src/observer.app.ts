/**
 * The observer: trace intake (raw NATS subscription), the in-memory store, the invariant
 * checker behind an HTTP API, and its RPC handlers (observerSync, ping, flush) on NATS.
 * One hybrid Nest app: Express for HTTP, the NATS transport for RPC.
 */
import { type DynamicModule, type INestApplication, type LogLevel, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { type MicroserviceOptions, NestMicroservice, Transport } from '@nestjs/microservices';
import {
  LabTokenGuard,
  natsServerOptions,
  SafeNatsDeserializer,
  Tracer,
  WireErrorFilter,
  controlController,
  useLabHttpErrors,
} from '@mmlab/runtime';
import { DashboardController } from './dashboard.controller';
import { EventsController } from './events.controller';
import { InvariantsController } from './invariants.controller';
import { observerHttpModule } from './observer-metrics';
import { OBSERVER_SETTINGS, type ObserverEnv, type ObserverSettings } from './observer.config';
import { setupOpenApi } from './openapi';
import { StreamController } from './stream.controller';
import { SyncController } from './sync.controller';
import { TraceIntake } from './trace-intake';
import { DEFAULT_MAX_EVENTS, TraceStore } from './trace-store';
import { StreamingTraceStore } from './trace-stream';

export { TraceIntake, TraceStore };

interface ObserverParts {
  store: TraceStore;
  intake: TraceIntake;
  tracer: Tracer;
  settings: ObserverSettings;
}

@Module({})
export class ObserverModule {
  static register(p: ObserverParts): DynamicModule {
    return {
      module: ObserverModule,
      // GET /metrics and GET /health (Terminus, on the intake's NATS connection)
      imports: [observerHttpModule(p)],
      controllers: [
        EventsController,
        InvariantsController,
        SyncController,
        StreamController,
        DashboardController,
        controlController(p.tracer),
      ],
      providers: [
        { provide: TraceStore, useValue: p.store },
        // A value provider still gets lifecycle hooks: app.close() drains and closes it.
        { provide: TraceIntake, useValue: p.intake },
        { provide: Tracer, useValue: p.tracer },
        { provide: OBSERVER_SETTINGS, useValue: p.settings },
      ],
    };
  }
}

export interface ObserverAppOptions {
  /** Nest log levels (false: silent, for tests) */
  logger?: LogLevel[] | false;
}

/**
 * Build and initialise the observer (HTTP routes ready, intake subscribed, RPC handlers
 * listening on NATS); the caller decides whether to listen() on a port (main.ts) or to drive
 * the HTTP server in-process (tests, via getHttpServer()). app.close() undoes everything.
 */
export async function createObserverApp(
  env: ObserverEnv,
  opts: ObserverAppOptions = {},
): Promise<INestApplication> {
  const instance = env.MMLAB_INSTANCE ?? 'observer';
  // GET /stream listens to the store itself
  const store = new StreamingTraceStore(env.MMLAB_OBSERVER_MAX_EVENTS ?? DEFAULT_MAX_EVENTS);
  // The intake opens its own connection first: the control controller's tracer needs it
  // before the module is declared, and events published while Nest starts are kept.
  const intake = await TraceIntake.open({
    natsUrl: env.NATS_URL,
    name: `${instance}-intake`,
    store,
    traceFile: env.MMLAB_TRACE_FILE,
  });
  let app: INestApplication | undefined;
  try {
    const tracer = new Tracer(intake.nc, 'observer', instance);
    app = await NestFactory.create(
      ObserverModule.register({
        store,
        intake,
        tracer,
        settings: { softlockupMs: env.MMLAB_SOFTLOCKUP_MS, labToken: env.MMLAB_LAB_TOKEN },
      }),
      { logger: opts.logger ?? ['error', 'warn', 'log'], abortOnError: false },
    );
    // every refusal typed (Nest's own 404/400/413 included), and on loopback the Host check
    // before any route (OpenAPI included): first, so that it comes before the routes
    useLabHttpErrors(app, env.MMLAB_HTTP_HOST);
    setupOpenApi(app); // GET /api, /api-json
    // POST /reset and every other mutating route: JSON and the lab's token only; on loopback,
    // requests to this machine's names only (lab-token.ts). HTTP only (the microservice below
    // has its own config)
    app.useGlobalGuards(new LabTokenGuard(env.MMLAB_LAB_TOKEN, env.MMLAB_HTTP_HOST));
    // WireErrorFilter belongs to the RPC side only. The microservice gets its own config (no
    // inheritAppConfig), and it is deferred so that the filter is in that config before its
    // handlers are bound (bound at connect time, they would never see it). On the app itself,
    // this catch-all filter would also take HTTP errors, 400s and 404s included, and answer
    // them with an Observable: no HTTP reply at all.
    const ms = app.connectMicroservice<MicroserviceOptions>(
      {
        transport: Transport.NATS,
        options: {
          ...natsServerOptions(env.NATS_URL),
          name: instance,
          deserializer: new SafeNatsDeserializer(),
          maxReconnectAttempts: -1,
          reconnectTimeWait: 250,
        },
      },
      { deferInitialization: true },
    );
    ms.useGlobalFilters(new WireErrorFilter());
    await app.init();
    // app.init() already ran the modules' init hooks; the deferred microservice would run them again.
    if (ms instanceof NestMicroservice) ms.setIsInitHookCalled(true);
    await app.startAllMicroservices();
    return app;
  } catch (e) {
    if (app) await app.close().catch(() => undefined);
    await intake.close();
    throw e;
  }
}
