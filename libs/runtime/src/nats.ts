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

/** Connect with reconnects forever: services outlive a NATS restart. */
export async function connectNats(url: string, name: string): Promise<NatsConnection> {
  return connect({
    ...natsServerOptions(url),
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    pingInterval: 10_000,
  });
}
