import { connect, type NatsConnection } from 'nats';

/** Connect with reconnects forever: services outlive a NATS restart. */
export async function connectNats(url: string, name: string): Promise<NatsConnection> {
  return connect({
    servers: url,
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    pingInterval: 10_000,
  });
}
