/**
 * `mmlab chaos ...` and `mmlab heal`: the lab API (apps/lab/src/api) from the command line.
 *
 *   mmlab chaos <target> <fault> [--ms N] [--distribution D] [--jitter MS] [--callbacks a,b]
 *   mmlab chaos status [--json]
 *   mmlab chaos targets [--json]
 *   mmlab heal [target]
 *
 * The API is at --lab-url, else MMLAB_LAB_URL, else http://127.0.0.1:8081 (`mmlab up` and
 * compose's lab-api). Opening and healing need the lab's token: --token, else MMLAB_LAB_TOKEN,
 * else the file `mmlab up` wrote for that lab (token-file.ts). A fault is checked against the same zod ChaosSpec the API validates with
 * before anything is sent, so a typo is named at once. Exit 0, or 2 with the reason (a bad
 * argument, the API's error message, the API unreachable).
 */
import type { Command } from 'commander';
import { ChaosSpec } from '@mmlab/scenario';
import type { ChaosState } from './api/chaos.controller';
import { LAB_API_PORT } from './api/lab-api-port';
import type { TargetList } from './api/targets';
import type { FaultWindow } from './nemesis';
import { tokenFor } from './token-file';

export const DEFAULT_LAB_URL = `http://127.0.0.1:${LAB_API_PORT}`;

export interface ChaosIo {
  out: (line: string) => void;
  err: (line: string) => void;
  env: NodeJS.ProcessEnv;
}

const stdio = (): ChaosIo => ({
  out: (l) => process.stdout.write(`${l}\n`),
  err: (l) => process.stderr.write(`${l}\n`),
  env: process.env,
});

export interface FaultOptions {
  ms?: string;
  distribution?: string;
  jitter?: string;
  callbacks?: string;
}

/** Which command-line spelling each ChaosSpec field has (for messages). */
const ARG_OF: Record<string, string> = {
  target: '<target>',
  fault: '<fault>',
  ms: '--ms',
  distribution: '--distribution',
  jitterMs: '--jitter',
  callbacks: '--callbacks',
};

const NUMBER_RE = /^\s*-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$/;

/** "200" → 200; anything else stays as typed, for zod to name. */
const num = (s: string): number | string => (NUMBER_RE.test(s) ? Number(s) : s);

export type SpecResult = { ok: true; spec: ChaosSpec } | { ok: false; message: string };

/** The command line of `mmlab chaos <target> <fault> ...` as a ChaosSpec, checked. */
export function chaosSpecOf(target: string, fault: string, o: FaultOptions): SpecResult {
  const raw: Record<string, unknown> = { target, fault };
  if (o.ms !== undefined) raw.ms = num(o.ms);
  if (o.distribution !== undefined) raw.distribution = num(o.distribution);
  if (o.jitter !== undefined) raw.jitterMs = num(o.jitter);
  if (o.callbacks !== undefined)
    raw.callbacks = o.callbacks
      .split(',')
      .map((c) => c.trim())
      .filter((c) => c !== '');
  const r = ChaosSpec.safeParse(raw);
  if (r.success) return { ok: true, spec: r.data };
  const message = r.error.issues
    .map((i) => {
      const field = String(i.path[0] ?? '');
      const arg = ARG_OF[field] ?? field;
      const rest = i.path.slice(1).map(String);
      const given = raw[field];
      const why =
        i.code === 'invalid_type' && i.expected === 'number' && typeof given === 'string'
          ? `expected a number, got "${given}"`
          : i.message;
      return `${arg || '(fault)'}${rest.length ? `[${rest.join('.')}]` : ''}: ${why}`;
    })
    .join('\n');
  return { ok: false, message };
}

export const labUrlOf = (opt: string | undefined, env: NodeJS.ProcessEnv): string =>
  (opt || env.MMLAB_LAB_URL || DEFAULT_LAB_URL).replace(/\/+$/, '');

/** A failure to report and exit 2 with. */
class ChaosCliError extends Error {}

/** One request to the lab API: the parsed JSON answer, or a ChaosCliError with its message. */
export async function labRequest<T>(
  url: string,
  method: 'GET' | 'POST',
  route: string,
  body?: unknown,
  auth?: { token: string | undefined; lookedIn: string },
): Promise<T> {
  let res: Response;
  try {
    res = await fetch(`${url}${route}`, {
      method,
      headers: {
        ...(body !== undefined && { 'content-type': 'application/json' }),
        ...(auth?.token && { authorization: `Bearer ${auth.token}` }),
      },
      ...(body !== undefined && { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(30_000),
    });
  } catch (e) {
    const why =
      e instanceof Error ? ((e.cause as Error | undefined)?.message ?? e.message) : String(e);
    throw new ChaosCliError(
      `cannot reach the lab API at ${url} (${why}): is \`mmlab up\` (or compose's lab-api) running? Set --lab-url or MMLAB_LAB_URL`,
    );
  }
  const text = await res.text();
  let json: unknown;
  try {
    json = text === '' ? undefined : JSON.parse(text);
  } catch {
    json = undefined;
  }
  if (!res.ok) {
    const b = (json ?? {}) as { code?: unknown; message?: unknown };
    const msg = Array.isArray(b.message) ? b.message.join('; ') : b.message;
    const code = typeof b.code === 'string' ? `${b.code}: ` : '';
    const hint =
      res.status === 401 && auth
        ? auth.token
          ? ` (the token came from ${auth.lookedIn})`
          : ` (no token in ${auth.lookedIn})`
        : '';
    throw new ChaosCliError(
      `${method} ${route}: HTTP ${res.status}: ${code}${typeof msg === 'string' ? msg : text || res.statusText}${hint}`,
    );
  }
  return json as T;
}

const clock = (ms: number): string => new Date(ms).toISOString().slice(11, 23);
const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;

export function windowLine(w: FaultWindow): string {
  const state =
    w.endedAt === null
      ? w.spec.ms
        ? `open since ${clock(w.startedAt)}, heals by itself after ${w.spec.ms} ms`
        : `open since ${clock(w.startedAt)}, until \`mmlab heal ${w.target}\``
      : `${clock(w.startedAt)} → ${clock(w.endedAt)} (${seconds(w.endedAt - w.startedAt)})`;
  return `#${w.id} ${w.label}: ${state}${w.healError ? ` [${w.healError}]` : ''}`;
}

/** The windows as a table, newest last. */
export function windowTable(s: ChaosState, at: number = Date.now()): string[] {
  const rows = [...s.windows]
    .sort((a, b) => a.id - b.id)
    .map((w) => [
      `#${w.id}`,
      w.endedAt === null ? 'ACTIVE' : 'healed',
      w.instance,
      w.fault,
      clock(w.startedAt),
      seconds((w.endedAt ?? at) - w.startedAt),
      w.label + (w.healError ? ` [${w.healError}]` : ''),
    ]);
  const head = ['ID', 'STATE', 'INSTANCE', 'FAULT', 'STARTED', 'LASTED', 'WHAT'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  return [
    `${s.active.length} active fault window(s), ${s.windows.length} in all`,
    ...(rows.length ? [line(head), ...rows.map(line)] : []),
  ];
}

async function guarded(io: ChaosIo, body: () => Promise<void>): Promise<number> {
  try {
    await body();
    return 0;
  } catch (e) {
    if (!(e instanceof ChaosCliError)) throw e;
    io.err(`mmlab: ${e.message}`);
    return 2;
  }
}

export async function chaosCommand(
  target: string,
  fault: string,
  opts: FaultOptions & { labUrl?: string; json?: boolean; token?: string },
  io: ChaosIo = stdio(),
): Promise<number> {
  const r = chaosSpecOf(target, fault, opts);
  if (!r.ok) {
    io.err(`mmlab chaos: ${r.message.split('\n').join('\nmmlab chaos: ')}`);
    return 2;
  }
  return guarded(io, async () => {
    const url = labUrlOf(opts.labUrl, io.env);
    const w = await labRequest<FaultWindow>(
      url,
      'POST',
      '/chaos',
      r.spec,
      tokenFor(url, opts.token, io.env),
    );
    io.out(opts.json ? JSON.stringify(w, null, 2) : windowLine(w));
  });
}

export function chaosStatusCommand(
  opts: { labUrl?: string; json?: boolean },
  io: ChaosIo = stdio(),
): Promise<number> {
  return guarded(io, async () => {
    const s = await labRequest<ChaosState>(labUrlOf(opts.labUrl, io.env), 'GET', '/chaos');
    if (opts.json) io.out(JSON.stringify(s, null, 2));
    else for (const l of windowTable(s)) io.out(l);
  });
}

export function chaosTargetsCommand(
  opts: { labUrl?: string; json?: boolean },
  io: ChaosIo = stdio(),
): Promise<number> {
  return guarded(io, async () => {
    const t = await labRequest<TargetList>(labUrlOf(opts.labUrl, io.env), 'GET', '/targets');
    if (opts.json) return io.out(JSON.stringify(t, null, 2));
    const subs = t.subscribers.join(' ') || 'none';
    if (t.local) {
      io.out(`subscribers (callback and process faults): ${subs}`);
      const others = t.processes.filter((p) => !t.subscribers.includes(p));
      io.out(`processes (pause, kill, restart): ${others.join(' ')}`);
    } else {
      io.out(`subscribers (callback faults): ${subs}`);
      io.out(`instances answering ping: ${t.targets.join(' ')}`);
      io.out(
        '(process faults need a lab started by `mmlab up`; on compose: docker compose pause/kill)',
      );
    }
  });
}

export function healCommand(
  target: string | undefined,
  opts: { labUrl?: string; token?: string },
  io: ChaosIo = stdio(),
): Promise<number> {
  return guarded(io, async () => {
    const body = target === undefined ? {} : { target };
    const url = labUrlOf(opts.labUrl, io.env);
    const r = await labRequest<{ healed: number }>(
      url,
      'POST',
      '/heal',
      body,
      tokenFor(url, opts.token, io.env),
    );
    io.out(`healed ${r.healed} fault window(s)${target ? ` of ${target}` : ''}`);
  });
}

const LAB_URL_HELP = `the lab API (default: MMLAB_LAB_URL, else ${DEFAULT_LAB_URL})`;
const TOKEN_HELP =
  "the lab's token (default: MMLAB_LAB_TOKEN, else the file `mmlab up` wrote for that lab)";

/** `mmlab chaos ...` and `mmlab heal` on program. */
export function registerChaosCommands(program: Command, setExit: (code: number) => void): void {
  const chaos = program
    .command('chaos')
    .description(
      'open a fault window on a running lab: mmlab chaos <target> <fault> (exit 0, or 2 with the reason); ' +
        'mmlab chaos status | targets',
    )
    .argument('<target>', 'a subscriber (hca0, kvm0), mm, mm-N, cpuN, nats or redis')
    .argument(
      '<fault>',
      'latency | hang | drop-ack | dup-ack | late-ack | crash (a subscriber); pause | kill | restart (a process)',
    )
    .option('--ms <n>', 'heal by itself after n ms (default: at `mmlab heal`)')
    .option(
      '--distribution <d>',
      'latency: ms, "uniform:a:b", "normal:mean:sd" or "pareto:scale:shape"',
    )
    .option('--jitter <ms>', 'latency: plus a uniform draw in [0, ms)')
    .option(
      '--callbacks <list>',
      'callback faults: only these callbacks (invalidate_range_start,invalidate_page,...)',
    )
    .option('--json', 'print the window as JSON')
    .option('--lab-url <url>', LAB_URL_HELP)
    .option('--token <token>', TOKEN_HELP)
    .action(
      async (
        target: string,
        fault: string,
        opts: FaultOptions & { labUrl?: string; json?: boolean; token?: string },
      ) => {
        setExit(await chaosCommand(target, fault, opts));
      },
    );
  chaos
    .command('status')
    .description('the active fault windows and every window so far')
    .option('--json', 'as JSON: {active, windows}')
    .option('--lab-url <url>', LAB_URL_HELP)
    .action(async (opts: { labUrl?: string; json?: boolean }, cmd: Command) => {
      setExit(await chaosStatusCommand({ ...cmd.optsWithGlobals(), ...opts }));
    });
  chaos
    .command('targets')
    .description('what a fault can be aimed at')
    .option('--json', 'as JSON')
    .option('--lab-url <url>', LAB_URL_HELP)
    .action(async (opts: { labUrl?: string; json?: boolean }, cmd: Command) => {
      setExit(await chaosTargetsCommand({ ...cmd.optsWithGlobals(), ...opts }));
    });
  program
    .command('heal')
    .description(
      'heal the open fault windows of a target (as named or resolved, e.g. mm-1), or all',
    )
    .argument('[target]', 'a target; all when omitted')
    .option('--lab-url <url>', LAB_URL_HELP)
    .option('--token <token>', TOKEN_HELP)
    .action(async (target: string | undefined, opts: { labUrl?: string; token?: string }) => {
      setExit(await healCommand(target, opts));
    });
}
