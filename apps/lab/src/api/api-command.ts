/**
 * `mmlab api`: the lab API (lab-api.ts) for a lab that is already running, found through
 * NATS_URL (compose's `lab-api` service, a lab started by scripts/lab.sh in another shell).
 * There is no LocalLab here: callback faults work, process faults are refused with the
 * nemesis's EINVAL that points at docker compose pause/kill/restart. Runs until SIGINT/SIGTERM,
 * and heals every window it opened before it exits.
 */
import { MmlabError } from '@mmlab/protocol';
import { EnvSchema, HOW_TO_SET_TOKEN, RpcClient, connectNats } from '@mmlab/runtime';
import { serveLabApi } from './lab-api';
import { natsUrlWithCredentials } from '../token-file';

export interface ApiOptions {
  port: string;
  /** default: MMLAB_HTTP_HOST (127.0.0.1; compose: 0.0.0.0) */
  host?: string;
}

/** nats://user:password@host → nats://user:***@host */
export const redactUrl = (url: string): string => url.replace(/\/\/([^:/@]+):[^@/]*@/, '//$1:***@');

export function parsePort(s: string, what: string): number {
  const v = Number(s);
  if (!Number.isInteger(v) || v < 0 || v > 65535)
    throw new MmlabError('EINVAL', `--${what} must be a port number (0..65535), got ${s}`);
  return v;
}

export async function apiCommand(
  opts: ApiOptions,
  env: NodeJS.ProcessEnv = process.env,
  log: (line: string) => void = (l) => console.log(l),
): Promise<number> {
  const port = parsePort(opts.port, 'port');
  // a lab `mmlab up` started: its owner's credentials from the file it left (token-file.ts)
  const natsUrl = natsUrlWithCredentials(EnvSchema.shape.NATS_URL.parse(env.NATS_URL), env);
  const host = opts.host ?? EnvSchema.shape.MMLAB_HTTP_HOST.parse(env.MMLAB_HTTP_HOST);
  const token = EnvSchema.shape.MMLAB_LAB_TOKEN.safeParse(env.MMLAB_LAB_TOKEN);
  if (!token.success)
    throw new Error(`MMLAB_LAB_TOKEN: ${token.error.issues.map((i) => i.message).join('; ')}`);
  const nc = await connectNats(natsUrl, 'mmlab-api').catch((e: unknown) => {
    throw new Error(
      `cannot reach NATS at ${redactUrl(natsUrl)}: ${e instanceof Error ? e.message : String(e)}`,
    );
  });
  try {
    const api = await serveLabApi({
      lab: null,
      rpc: new RpcClient(nc),
      port,
      host,
      token: token.data,
      log,
    });
    log(
      [
        `mmlab lab API on ${api.url} (bound to ${host}; OpenAPI at /api), NATS ${redactUrl(natsUrl)}`,
        token.data
          ? "  POST /chaos and /heal need the lab's token (MMLAB_LAB_TOKEN): Authorization: Bearer <token>"
          : `  no MMLAB_LAB_TOKEN: POST /chaos and /heal are refused; ${HOW_TO_SET_TOKEN}`,
        '  callback faults on the subscribers answering ping; process faults need `mmlab up`',
        '  (on compose: docker compose pause/kill/restart)',
        `  MMLAB_LAB_URL=${api.url} npx mmlab chaos targets`,
      ].join('\n'),
    );
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    log('healing every open fault window and stopping');
    await api.close();
  } finally {
    await nc.close();
  }
  return 0;
}
