/**
 * Redis MONITOR for tests and benchmarks that count the calls a path makes: every command the
 * server runs, in order, with the client that sent it (named: the mm replicas set their
 * connection name to their instance) and, for a script call, the script's name (boundary.ts).
 * Counting, never timing.
 */
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { type Socket, connect } from 'node:net';
import Redis from 'ioredis';
import { SCRIPTS } from '@mmlab/model';
import { until } from './trace-log';

/** Script name by the SHA1 of its Lua source (what EVALSHA names). */
const SCRIPT_BY_SHA = new Map(
  Object.entries(SCRIPTS).map(([name, d]) => [
    createHash('sha1').update(d.lua).digest('hex'),
    name,
  ]),
);

/**
 * A Lua source as MONITOR shows an EVAL (the first call of a script on a Redis without it):
 * escaped as Redis's sdscatrepr does, with \" read back by ioredis.
 */
const repr = (s: string): string =>
  s.replace(/[\\]|[^\x20-\x7e]/gu, (c) => {
    const named: Record<string, string> = {
      '\\': '\\\\',
      '\n': '\\n',
      '\r': '\\r',
      '\t': '\\t',
      '\x07': '\\a',
      '\b': '\\b',
    };
    return (
      named[c] ?? [...Buffer.from(c)].map((b) => `\\x${b.toString(16).padStart(2, '0')}`).join('')
    );
  });
const SCRIPT_BY_SOURCE = new Map(Object.entries(SCRIPTS).map(([name, d]) => [repr(d.lua), name]));

/** One command as MONITOR showed it (commands run by scripts, source "lua", are left out). */
export interface MonitoredCommand {
  /** the client's address ("ip:port") */
  source: string;
  /** the command, lower case */
  cmd: string;
  /** for EVAL/EVALSHA: the script's name (boundary.ts), 'unknown' if none matches */
  script?: string;
  /** its first key or argument (a script call: its first key) */
  arg: string;
}

/** A command an mm replica's timers send (liveness renewal, the reaper's scan), not a request's. */
export const isMmTimerCommand = (c: MonitoredCommand): boolean =>
  c.script === undefined && (c.arg.startsWith('{mm}:') || c.arg === '{mem}:pending');

export class RedisMonitor {
  /** every command seen since start, in the order Redis ran them */
  readonly seen: MonitoredCommand[] = [];
  /** errors of the MONITOR connection (a line may have been lost: counts are not to be trusted) */
  readonly errors: unknown[] = [];
  private readonly markers = new Set<string>();
  private pending = '';

  private constructor(
    private readonly url: string,
    private readonly sock: Socket,
  ) {}

  /**
   * MONITOR on a plain socket of its own: RESP written by hand, the stream read line by line.
   * Not ioredis's monitor(): its connection can take a monitored line for the reply to a command
   * of its own queue while the stream starts ("Command queue state error"), and throws that from
   * its socket handler, out of any caller's reach (an uncaught exception in a CI run).
   */
  static async start(url: string): Promise<RedisMonitor> {
    const u = new URL(url);
    const sock = connect({ host: u.hostname || '127.0.0.1', port: Number(u.port || 6379) });
    const m = new RedisMonitor(url, sock);
    sock.setEncoding('utf8'); // MONITOR escapes every byte outside printable ASCII
    sock.on('error', (e: unknown) => m.errors.push(e));
    sock.on('data', (chunk: string) => m.onData(chunk));
    await once(sock, 'connect');
    const resp = (...args: string[]) =>
      `*${args.length}\r\n${args.map((x) => `$${Buffer.byteLength(x)}\r\n${x}\r\n`).join('')}`;
    if (u.password)
      sock.write(
        u.username
          ? resp('AUTH', decodeURIComponent(u.username), decodeURIComponent(u.password))
          : resp('AUTH', decodeURIComponent(u.password)),
      );
    sock.write(resp('MONITOR'));
    await m.sync();
    if (m.errors.length > 0) {
      m.stop();
      throw new Error(`MONITOR did not start: ${String(m.errors[0])}`);
    }
    return m;
  }

  private onData(chunk: string): void {
    this.pending += chunk;
    for (let i = this.pending.indexOf('\r\n'); i >= 0; i = this.pending.indexOf('\r\n')) {
      const line = this.pending.slice(0, i);
      this.pending = this.pending.slice(i + 2);
      if (line.startsWith('-')) this.errors.push(new Error(line.slice(1)));
      // +<time> [<db> <client address, or lua>] "<arg>" "<arg>" ... (+OK: AUTH's, MONITOR's)
      const m = /^\+\S+ \[\d+ ([^\]]+)\] (.*)$/.exec(line);
      if (!m) continue;
      // each argument as Redis quotes it (sdscatrepr), with \" read back, as ioredis reads them
      const args = (m[2].match(/"(?:[^"\\]|\\.)*"/g) ?? []).map((q) =>
        q.slice(1, -1).replace(/\\"/g, '"'),
      );
      this.record(args, m[1]);
    }
  }

  private record(args: string[], source: string): void {
    const cmd = args[0]?.toLowerCase() ?? '';
    if (cmd === 'echo' && args[1]?.startsWith('redis-monitor:')) {
      this.markers.add(args[1]);
      return;
    }
    if (source === 'lua') return;
    const script =
      cmd === 'evalsha'
        ? (SCRIPT_BY_SHA.get(args[1]) ?? 'unknown')
        : cmd === 'eval'
          ? (SCRIPT_BY_SOURCE.get(args[1]) ?? 'unknown')
          : undefined;
    // EVAL/EVALSHA script numkeys key...: the first key
    const arg = script !== undefined ? (args[3] ?? '') : (args[1] ?? '');
    this.seen.push({ source, cmd, ...(script !== undefined && { script }), arg });
  }

  /**
   * Every command Redis ran before this call is in `seen` once it resolves: a marker sent now
   * runs after them, and MONITOR shows commands in the order they ran.
   */
  async sync(): Promise<void> {
    const token = `redis-monitor:${randomBytes(6).toString('hex')}`;
    const sender = new Redis(this.url);
    try {
      await until(async () => {
        await sender.echo(token);
        return this.markers.has(token);
      }, 'MONITOR to show a marker');
    } finally {
      sender.disconnect();
    }
  }

  /** The addresses of the clients whose connection name satisfies pred (CLIENT LIST). */
  async clients(pred: (name: string) => boolean): Promise<Set<string>> {
    const sender = new Redis(this.url);
    try {
      const list = (await sender.client('LIST')) as string;
      const out = new Set<string>();
      for (const line of list.split('\n')) {
        const addr = /(?:^| )addr=(\S+)/.exec(line)?.[1];
        const name = /(?:^| )name=(\S*)/.exec(line)?.[1] ?? '';
        if (addr && pred(name)) out.add(addr);
      }
      return out;
    } finally {
      sender.disconnect();
    }
  }

  /**
   * The commands the mm replicas sent while run() ran (a script call by its name, any other
   * command by its own), in order: the commands of their connections (named mm-<n>), but for
   * what their timers send whatever run() does — the liveness lease's SET {mm}:live:<it> and
   * the orphan-range reaper's reads of {mm}:* and {mem}:pending.
   */
  async mmCalls(run: () => Promise<unknown>): Promise<string[]> {
    await this.sync(); // what ran before is in `seen` already, not counted
    const from = this.seen.length;
    await run();
    await this.sync();
    if (this.errors.length > 0) throw new Error(`MONITOR failed: ${String(this.errors[0])}`);
    const mm = await this.clients((name) => /^mm-/.test(name));
    if (mm.size === 0) throw new Error('no mm replica has a named Redis connection');
    return this.seen
      .slice(from)
      .filter((c) => mm.has(c.source) && !isMmTimerCommand(c))
      .map((c) => c.script ?? c.cmd);
  }

  stop(): void {
    this.sock.destroy();
  }
}
