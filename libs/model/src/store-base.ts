/**
 * The connection to the lab's Redis and the one typed call path of its scripts (boundary.ts):
 * the base of the Store's rooms (mem/store.ts, mm/store.ts, store.ts).
 */
import Redis, { Cluster, type RedisOptions } from 'ioredis';
import {
  type ArgsOf,
  type KeysOf,
  type ReplyOf,
  type ScriptDecl,
  decodeReply,
  encodeCall,
} from './boundary';
import { SCRIPTS, type ScriptName } from './scripts';

type ScriptFn = (...args: Array<string | number>) => Promise<unknown>;

/** Scripts called with their key count first (varKeys in SCRIPTS). */
const VARIABLE_KEY_SCRIPTS = Object.entries(SCRIPTS)
  .filter(([, d]) => 'varKeys' in d)
  .map(([name]) => name);

/**
 * `redis+cluster://host:port,host:port` names a Redis Cluster (its seed nodes, with an
 * optional `user:password@`); anything else is one Redis server.
 */
export function connectRedis(url: string, opts: RedisOptions = {}): Redis | Cluster {
  // Reconnect forever, every 50..500 ms (a restarted redis-server is back within a second); a
  // command sent while Redis is away waits in the offline queue and one in flight when the
  // connection dropped is sent again (ioredis autoResendUnfulfilledCommands), so callers see a
  // delay, never an error. Scripts survive a restart: defineCommand's EVALSHA falls back to EVAL
  // on NOSCRIPT (the restarted server's script cache is empty).
  const common: RedisOptions = {
    maxRetriesPerRequest: null,
    enableAutoPipelining: true,
    retryStrategy: (times) => Math.min(50 * times, 500),
    ...opts,
  };
  const m = /^redis\+cluster:\/\/(?:([^:@/]*):([^@/]*)@)?([^/]+)\/?$/.exec(url);
  if (!m) return new Redis(url, common);
  const nodes = m[3].split(',').map((hp) => {
    const [host, port] = hp.split(':');
    return { host, port: Number(port || 6379) };
  });
  return new Cluster(nodes, {
    redisOptions: {
      ...common,
      username: m[1] ? decodeURIComponent(m[1]) : undefined,
      password: m[2] ? decodeURIComponent(m[2]) : undefined,
    },
    enableAutoPipelining: true,
    // Auto-pipelining groups a script call by the slot of its first argument: for a script with
    // a variable key count that is the count, not a key, so the group would be wrong ("All keys
    // in the pipeline should belong to the same slots allocation group"). Send those alone.
    autoPipeliningIgnoredCommands: VARIABLE_KEY_SCRIPTS,
    clusterRetryStrategy: (times) => Math.min(100 + 50 * times, 1000),
  });
}

export class StoreBase {
  readonly redis: Redis | Cluster;

  /** How often each script ran through this store (the Cluster test checks all of them did). */
  readonly scriptCalls = new Map<ScriptName, number>();

  constructor(target: string | Redis | Cluster, opts: RedisOptions = {}) {
    this.redis = typeof target === 'string' ? connectRedis(target, opts) : target;
    // Connection errors while Redis is away are expected: ioredis reconnects and the commands
    // wait (see connectRedis). Without a listener, each attempt would be printed as unhandled.
    if (typeof target === 'string') this.redis.on('error', () => undefined);
    // varKeys: a variable key count, which the caller passes first (see call).
    for (const [name, d] of Object.entries(SCRIPTS))
      this.redis.defineCommand(name, {
        numberOfKeys: 'varKeys' in d ? undefined : d.keys.length,
        lua: d.lua,
      });
  }

  async quit(): Promise<void> {
    try {
      await this.redis.quit();
    } catch {
      this.redis.disconnect();
    }
  }

  /**
   * Run script name with its KEYS by role and its ARGV by name (built in declared order), and
   * parse its reply with the declared schema. Bad arguments: EINVAL, nothing sent.
   */
  async call<N extends ScriptName>(
    name: N,
    keys: KeysOf<(typeof SCRIPTS)[N]>,
    args: ArgsOf<(typeof SCRIPTS)[N]>,
  ): Promise<ReplyOf<(typeof SCRIPTS)[N]>> {
    const d: ScriptDecl = SCRIPTS[name];
    const enc = encodeCall(name, d, keys as KeysOf<ScriptDecl>, args as ArgsOf<ScriptDecl>);
    const { keys: k, argv } = enc;
    this.scriptCalls.set(name, (this.scriptCalls.get(name) ?? 0) + 1);
    const fn = (this.redis as unknown as Record<ScriptName, ScriptFn>)[name];
    const raw =
      d.varKeys !== undefined
        ? await fn.call(this.redis, k.length, ...k, ...argv)
        : await fn.call(this.redis, ...k, ...argv);
    return decodeReply(name, d, raw) as ReplyOf<(typeof SCRIPTS)[N]>;
  }
}
