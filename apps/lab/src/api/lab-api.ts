/**
 * The lab's HTTP API: one Nemesis behind a small Express app (OpenAPI at /api).
 *
 *   GET  /chaos    {active, windows}
 *   POST /chaos    a ChaosSpec → the window opened (201); see errors.ts for the failures
 *   POST /heal     {target?} → {healed}
 *   GET  /targets  what can be aimed at (TargetList)
 *   GET  /health   200 while the NATS link is up, else 503
 *
 * `mmlab up` serves it beside the lab it started (process faults work); `mmlab api` serves it
 * for a lab found through NATS_URL (compose's `lab-api`: callback faults only).
 */
import { type DynamicModule, type INestApplication, type LogLevel, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { AddressInfo } from 'node:net';
import { Events, type NatsConnection } from 'nats';
import { LabTokenGuard, type RpcClient, useLabHttpErrors } from '@mmlab/runtime';
import { type LocalLab, freePort, isPortFree } from '@mmlab/runner';
import { Nemesis } from '../nemesis';
import {
  ChaosController,
  NATS_LINK,
  NEMESIS,
  type NatsLink,
  type NemesisApi,
  TARGETS,
  type TargetsApi,
} from './chaos.controller';
import { MmlabErrorFilter } from './errors';
import { setupOpenApi } from './openapi';
import { LabTargets } from './targets';

export { LAB_API_PORT } from './lab-api-port';

/** Where the lab API listens unless told otherwise (MMLAB_HTTP_HOST's default). */
const DEFAULT_HOST = '127.0.0.1';

export interface LabApiParts {
  nemesis: NemesisApi;
  targets: TargetsApi;
  /** the NATS link the nemesis uses (GET /health) */
  nats: NatsLink;
  /** the lab's token: POST /chaos and /heal need it (undefined: they are refused, EACCES) */
  token: string | undefined;
  /** the address it will listen on (default 127.0.0.1: then it answers Host 127.0.0.1/localhost only) */
  bindHost?: string;
}

@Module({})
export class LabApiModule {
  static register(p: LabApiParts): DynamicModule {
    return {
      module: LabApiModule,
      controllers: [ChaosController],
      providers: [
        { provide: NEMESIS, useValue: p.nemesis },
        { provide: TARGETS, useValue: p.targets },
        { provide: NATS_LINK, useValue: p.nats },
      ],
    };
  }
}

/** A NATS connection as a NatsLink: down while disconnected (it reconnects by itself) or closed. */
export function natsLinkOf(nc: NatsConnection): NatsLink {
  let connected = true;
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === Events.Disconnect) connected = false;
      else if (s.type === Events.Reconnect) connected = true;
    }
  })().catch(() => undefined);
  return () =>
    nc.isClosed()
      ? { up: false, state: 'closed' }
      : { up: connected, state: connected ? 'connected' : 'disconnected' };
}

/** Build and initialise the app (routes ready); listen with listenLabApi, or drive it in-process. */
export async function createLabApi(
  parts: LabApiParts,
  opts: { logger?: LogLevel[] | false } = {},
): Promise<INestApplication> {
  const app = await NestFactory.create(LabApiModule.register(parts), {
    logger: opts.logger ?? ['error', 'warn'],
    abortOnError: false,
  });
  // typed refusals (Nest's own included), the loopback Host check before any route; the
  // nemesis's errors by MmlabErrorFilter
  useLabHttpErrors(app, parts.bindHost ?? DEFAULT_HOST, new MmlabErrorFilter());
  // POST /chaos, /heal: JSON and the lab's token only (a web page cannot drive the nemesis)
  app.useGlobalGuards(new LabTokenGuard(parts.token, parts.bindHost ?? DEFAULT_HOST));
  setupOpenApi(app);
  await app.init();
  return app;
}

/**
 * Listen on port when it is free, else on any free port; the URL it is reachable at
 * (127.0.0.1, whatever host it is bound to).
 */
export async function listenLabApi(
  app: INestApplication,
  port: number,
  host = DEFAULT_HOST,
): Promise<string> {
  const p = port === 0 || (await isPortFree(port)) ? port : await freePort();
  await app.listen(p, host);
  const addr = (app.getHttpServer() as { address(): AddressInfo | string | null }).address();
  const bound = addr && typeof addr === 'object' ? addr.port : p;
  return `http://127.0.0.1:${bound}`;
}

export interface ServedLabApi {
  url: string;
  nemesis: Nemesis;
  /** Heal every open window, then stop listening. */
  close(): Promise<void>;
}

/**
 * One Nemesis on lab (null: a lab found through NATS) and rpc, served on port (busy: any free
 * port). The caller owns rpc's connection and the lab.
 */
export async function serveLabApi(o: {
  lab: LocalLab | null;
  rpc: RpcClient;
  port: number;
  /** the address to bind (MMLAB_HTTP_HOST; default 127.0.0.1) */
  host?: string;
  /** the lab's token (see LabApiParts) */
  token: string | undefined;
  log?: (line: string) => void;
}): Promise<ServedLabApi> {
  const nemesis = new Nemesis(o.lab, o.rpc, { log: o.log });
  const app = await createLabApi({
    nemesis,
    targets: new LabTargets(o.lab, o.rpc),
    nats: natsLinkOf(o.rpc.nc),
    token: o.token,
    bindHost: o.host ?? DEFAULT_HOST,
  });
  try {
    const url = await listenLabApi(app, o.port, o.host);
    return {
      url,
      nemesis,
      close: async () => {
        try {
          await nemesis.heal();
          // the chaos.end of every window healed goes out before the caller closes NATS
          await nemesis.flush().catch(() => undefined);
        } finally {
          await app.close();
        }
      },
    };
  } catch (e) {
    await app.close();
    throw e;
  }
}
