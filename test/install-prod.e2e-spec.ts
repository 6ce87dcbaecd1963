/**
 * The built CLI from an install without devDependencies, as the compose image has it: dist/,
 * package.json and package-lock.json copied to a temporary directory, `npm ci --omit=dev`
 * there, then `mmlab --help` (through package.json's bin, as `npx mmlab` runs it) and
 * `mmlab api` against a real nats-server, which must serve its health and its OpenAPI.
 *
 * This is what broke the compose image's lab-api: the CLI loaded @mmlab/testing, whose index
 * pulls in playwright-core, a devDependency; node fails at the first require.
 *
 * The production install is cached by the lockfile's hash (in the OS temp directory; the
 * checkout's node_modules may be shared), so only the first run after a lockfile change
 * talks to the npm registry (and its local cache).
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ServerHandle, repoRoot, startNats } from '@mmlab/runner';

const run = promisify(execFile);
const root = repoRoot();

/** node_modules of `npm ci --omit=dev` for this lockfile, installed once per lockfile. */
async function prodModules(): Promise<string> {
  const lock = readFileSync(path.join(root, 'package-lock.json'));
  const pkg = readFileSync(path.join(root, 'package.json'));
  const key = createHash('sha256').update(lock).update(pkg).digest('hex').slice(0, 16);
  const base = path.join(tmpdir(), 'mmlab-prod-install');
  const done = path.join(base, key);
  if (existsSync(path.join(done, 'node_modules'))) return path.join(done, 'node_modules');
  mkdirSync(base, { recursive: true });
  const work = mkdtempSync(path.join(base, `${key}.partial-`));
  cpSync(path.join(root, 'package.json'), path.join(work, 'package.json'));
  cpSync(path.join(root, 'package-lock.json'), path.join(work, 'package-lock.json'));
  await run(
    'npm',
    ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline'],
    { cwd: work, maxBuffer: 16 * 1024 * 1024 },
  );
  // a complete install only, under its final name (another run may have won the race)
  try {
    renameSync(work, done);
  } catch {
    rmSync(work, { recursive: true, force: true });
  }
  return path.join(done, 'node_modules');
}

let app: string;
let nats: ServerHandle | undefined;
let api: ChildProcess | undefined;

beforeAll(async () => {
  if (!existsSync(path.join(root, 'dist', 'apps', 'lab', 'src', 'main.js')))
    throw new Error('dist/ is missing: npm run build first');
  const modules = await prodModules();
  app = mkdtempSync(path.join(tmpdir(), 'mmlab-prod-app-'));
  cpSync(path.join(root, 'dist'), path.join(app, 'dist'), { recursive: true });
  cpSync(path.join(root, 'package.json'), path.join(app, 'package.json'));
  cpSync(path.join(root, 'package-lock.json'), path.join(app, 'package-lock.json'));
  symlinkSync(modules, path.join(app, 'node_modules'), 'dir');
  nats = await startNats();
}, 600_000);

afterAll(async () => {
  if (api && api.exitCode === null) api.kill('SIGKILL');
  await nats?.stop();
  if (app) rmSync(app, { recursive: true, force: true });
});

describe('the CLI from an install without devDependencies', () => {
  it('has no devDependency installed (the test would prove nothing otherwise)', () => {
    expect(existsSync(path.join(app, 'node_modules', 'playwright-core'))).toBe(false);
    expect(existsSync(path.join(app, 'node_modules', 'vitest'))).toBe(false);
    expect(existsSync(path.join(app, 'node_modules', 'commander'))).toBe(true);
  });

  it('`mmlab --help` through package.json bin (npm exec, as npx runs it) lists the commands', async () => {
    const pkg = JSON.parse(readFileSync(path.join(app, 'package.json'), 'utf8')) as {
      bin: Record<string, string>;
    };
    expect(
      readFileSync(path.join(app, pkg.bin.mmlab), 'utf8').startsWith('#!/usr/bin/env node'),
    ).toBe(true);
    const { stdout } = await run('npm', ['exec', '--offline', '--', 'mmlab', '--help'], {
      cwd: app,
    });
    for (const cmd of ['run', 'up', 'api', 'chaos', 'heal'])
      expect(stdout).toMatch(new RegExp(`\\n  ${cmd}\\b`));
  });

  it('`mmlab api` starts and serves /health and its OpenAPI', async () => {
    const proc = spawn(
      process.execPath,
      [path.join(app, 'dist/apps/lab/src/main.js'), 'api', '--port', '0', '--host', '127.0.0.1'],
      {
        cwd: app,
        env: { ...process.env, NATS_URL: nats!.url },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    api = proc;
    let out = '';
    let err = '';
    proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((r) => proc.once('exit', (c) => r(c)));
    const url = await new Promise<string>((resolve, reject) => {
      const check = () => {
        const m = /lab API on (http:\/\/\S+)/.exec(out);
        if (m) resolve(m[1]);
      };
      proc.stdout.on('data', check);
      void exited.then((c) => reject(new Error(`mmlab api exited (${c}):\n${out}\n${err}`)));
    });
    const health = await fetch(new URL('/health', url));
    expect(health.status).toBe(200);
    const openapi = (await (await fetch(new URL('/api-json', url))).json()) as {
      paths: Record<string, unknown>;
    };
    expect(Object.keys(openapi.paths)).toEqual(expect.arrayContaining(['/chaos', '/heal']));
    proc.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(err).not.toMatch(/Cannot find module/);
  });
});
