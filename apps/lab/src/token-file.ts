/**
 * Where the CLI finds a running lab's token. `mmlab up` writes it to
 * `<runtime dir>/lab-<lab API port>.token` (mode 0600, in a directory of mode 0700 owned by
 * the user) and removes it when it stops; `mmlab chaos`/`heal` take, in this order, --token,
 * MMLAB_LAB_TOKEN, then that file for the port of the lab URL they talk to.
 *
 *   runtime dir: MMLAB_RUNTIME_DIR, else $XDG_RUNTIME_DIR/mmlab, else <tmpdir>/mmlab-<uid>
 */
import { chmodSync, lstatSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

const uid = (): number => process.getuid?.() ?? -1;

export function runtimeDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.MMLAB_RUNTIME_DIR) return env.MMLAB_RUNTIME_DIR;
  if (env.XDG_RUNTIME_DIR) return path.join(env.XDG_RUNTIME_DIR, 'mmlab');
  return path.join(tmpdir(), `mmlab-${uid()}`);
}

/** The token file of the lab whose API listens on port. */
export function tokenFile(port: number, env: NodeJS.ProcessEnv = process.env): string {
  return path.join(runtimeDir(env), `lab-${port}.token`);
}

/** The port of a lab URL (http://127.0.0.1:8081 → 8081), null if it has none and no default. */
export function portOf(url: string): number | null {
  try {
    const u = new URL(url);
    if (u.port) return Number(u.port);
    return u.protocol === 'http:' ? 80 : u.protocol === 'https:' ? 443 : null;
  } catch {
    return null;
  }
}

/**
 * A directory only this user can enter: created 0700, or refused when it exists and another
 * user owns it or others may enter it (a token written there could be read, or replaced).
 */
function privateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = lstatSync(dir);
  if (!st.isDirectory()) throw new Error(`${dir} is not a directory`);
  if (uid() >= 0 && st.uid !== uid()) throw new Error(`${dir} belongs to another user`);
  if ((st.mode & 0o077) !== 0)
    throw new Error(`${dir} is open to other users (mode ${(st.mode & 0o777).toString(8)})`);
}

/** Write one secret line to file, in a private directory, readable by this user only. */
function writeSecret(file: string, secret: string): string {
  privateDir(path.dirname(file));
  // a fresh file, so that its mode is ours whatever was there before
  rmSync(file, { force: true });
  writeFileSync(file, `${secret}\n`, { mode: 0o600, flag: 'wx' });
  chmodSync(file, 0o600);
  return file;
}

/** Remove file when it still holds this secret (another lab may have taken the port). */
function removeSecret(file: string, secret: string): void {
  if (readTokenFile(file) === secret) rmSync(file, { force: true });
}

/** Write the token of the lab whose API listens on port; returns the file. */
export function writeTokenFile(
  port: number,
  token: string,
  env: NodeJS.ProcessEnv = process.env,
): string {
  return writeSecret(tokenFile(port, env), token);
}

/** Remove the token file when it still holds this token (another lab may have taken the port). */
export function removeTokenFile(port: number, token: string, env: NodeJS.ProcessEnv = process.env) {
  removeSecret(tokenFile(port, env), token);
}

/** The token in a file, or undefined when there is no readable one. */
export function readTokenFile(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/**
 * Where `mmlab up` leaves its lab's NATS URL with the lab owner's credentials (user `lab`, a
 * password made at start: libs/runner nats-identities.ts), for `mmlab run` against that lab:
 * `<runtime dir>/lab-nats-<NATS port>.url`, mode 0600, removed when the lab stops.
 */
export function natsUrlFile(port: number, env: NodeJS.ProcessEnv = process.env): string {
  return path.join(runtimeDir(env), `lab-nats-${port}.url`);
}

/** Write the lab's NATS URL (with its credentials) for the lab on port; returns the file. */
export function writeNatsUrlFile(
  port: number,
  url: string,
  env: NodeJS.ProcessEnv = process.env,
): string {
  return writeSecret(natsUrlFile(port, env), url);
}

/** Remove the NATS URL file when it still holds this URL. */
export function removeNatsUrlFile(port: number, url: string, env: NodeJS.ProcessEnv = process.env) {
  removeSecret(natsUrlFile(port, env), url);
}

/**
 * The URL `mmlab run` connects to a running lab with: NATS_URL as given when it carries
 * credentials, else the one `mmlab up` left for that port (natsUrlFile), else as given.
 */
export function natsUrlWithCredentials(url: string, env: NodeJS.ProcessEnv = process.env): string {
  if (/^\w+:\/\/[^@/]+@/.test(url)) return url;
  const port = portOf(url.replace(/^nats:/, 'http:'));
  return (port !== null && readTokenFile(natsUrlFile(port, env))) || url;
}

/** The token the CLI sends to the lab at labUrl: --token, MMLAB_LAB_TOKEN, the lab's file. */
export function tokenFor(
  labUrl: string,
  opt: string | undefined,
  env: NodeJS.ProcessEnv,
): { token: string | undefined; lookedIn: string } {
  if (opt) return { token: opt, lookedIn: '--token' };
  if (env.MMLAB_LAB_TOKEN?.trim())
    return { token: env.MMLAB_LAB_TOKEN.trim(), lookedIn: 'MMLAB_LAB_TOKEN' };
  const port = portOf(labUrl);
  const file = port === null ? null : tokenFile(port, env);
  return {
    token: file ? readTokenFile(file) : undefined,
    lookedIn: `--token, MMLAB_LAB_TOKEN${file ? ` and ${file}` : ''}`,
  };
}

/**
 * Where `mmlab up --byo NAME` leaves an external device's credentials (libs/subscriber
 * DeviceCreds: its NATS identity, the dev Redis user, the lab's environment) for
 * `node <device>.js --creds FILE`: `<runtime dir>/dev-<NAME>.json`, mode 0600, removed when the
 * lab stops.
 */
export function deviceCredsFile(name: string, env: NodeJS.ProcessEnv = process.env): string {
  return path.join(runtimeDir(env), `dev-${name}.json`);
}

/** Write an external device's credentials (JSON); returns the file. */
export function writeDeviceCredsFile(
  name: string,
  creds: string,
  env: NodeJS.ProcessEnv = process.env,
): string {
  return writeSecret(deviceCredsFile(name, env), creds);
}

/** Remove a device's credentials file when it still holds these credentials. */
export function removeDeviceCredsFile(
  name: string,
  creds: string,
  env: NodeJS.ProcessEnv = process.env,
) {
  removeSecret(deviceCredsFile(name, env), creds);
}
