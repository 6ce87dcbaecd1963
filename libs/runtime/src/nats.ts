import { connect, type NatsConnection } from 'nats';

/**
 * Connection options from a NATS URL. nats.js ignores credentials written in the URL, so
 * `nats://user:password@host:port` (how compose and Kubernetes hand each service its NATS
 * user) is split into servers, user and pass here.
 */
export function natsServerOptions(url: string): { servers: string; user?: string; pass?: string } {
  const m = /^(\w+:\/\/)([^:@/]+):([^@/]*)@(.*)$/.exec(url);
  if (!m) return { servers: url };
  return { servers: m[1] + m[4], user: decodeURIComponent(m[2]), pass: decodeURIComponent(m[3]) };
}

/**
 * Options every connection of the lab takes. noAsyncTraces: nats.js otherwise builds an Error
 * (a stack trace) for every request, to give a later timeout the caller's stack; on the fault
 * path that was a measurable share of a request's CPU (issue 11). A failed request is still an
 * MmlabError naming its subject (rpc-client.ts).
 */
export const NATS_COMMON_OPTIONS = { noAsyncTraces: true } as const;

/** Connect with reconnects forever: services outlive a NATS restart. */
export async function connectNats(url: string, name: string): Promise<NatsConnection> {
  return connect({
    ...natsServerOptions(url),
    ...NATS_COMMON_OPTIONS,
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    pingInterval: 10_000,
  });
}
