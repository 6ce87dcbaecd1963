import { connect, type NatsConnection } from 'nats';
import { inboxPrefix } from '@mmlab/protocol';

/**
 * Connection options from a NATS URL. nats.js ignores credentials written in the URL, so
 * `nats://user:password@host:port` (how the native runner, compose and Kubernetes hand each
 * service its NATS identity) is split into servers, user and pass here. A user reads its
 * replies below its own inbox prefix (_INBOX.<user>), the only inbox its NATS permissions let
 * it subscribe to (libs/protocol permissions.ts).
 */
export function natsServerOptions(url: string): {
  servers: string;
  user?: string;
  pass?: string;
  inboxPrefix?: string;
} {
  const m = /^(\w+:\/\/)([^:@/]+):([^@/]*)@(.*)$/.exec(url);
  if (!m) return { servers: url };
  const user = decodeURIComponent(m[2]);
  return {
    servers: m[1] + m[4],
    user,
    pass: decodeURIComponent(m[3]),
    inboxPrefix: inboxPrefix(user),
  };
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
