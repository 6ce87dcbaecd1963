/**
 * The launcher every lab process starts through (libs/runtime/src/launch.ts): it runs a bundle
 * with the command line it would have had run directly, keeps Node's own import() working in
 * it (the report loads the ESM-only vega so), maps stack traces to the TypeScript sources, and
 * runs a service's bundle from V8's code cache.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { build } from 'esbuild';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot } from '@mmlab/runner';

const dir = mkdtempSync(path.join(tmpdir(), 'mmlab-launch-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const launcher = path.join(repoRoot(), 'dist', 'libs', 'runtime', 'src', 'launch.js');
const bundle = path.join(dir, 'out', 'main.js');

describe('launch.js', () => {
  it('runs a bundle with its own argv and import(), and maps traces to the sources', async () => {
    const src = path.join(dir, 'app.ts');
    writeFileSync(
      src,
      [
        '#!/usr/bin/env node',
        'function boom(n: number): never {',
        '  throw new Error(`boom ${n}`);',
        '}',
        'let stack = "";',
        'try { boom(1); } catch (e) { stack = (e as Error).stack ?? ""; }',
        'const nodeImport = new Function("s", "return import(s)");',
        'void nodeImport("node:os").then((os: { EOL: string }) =>',
        '  console.log(JSON.stringify({ argv: process.argv.slice(1), stack, eol: os.EOL })),',
        ');',
        '',
      ].join('\n'),
    );
    await build({
      entryPoints: [src],
      outfile: bundle,
      bundle: true,
      platform: 'node',
      format: 'cjs',
      sourcemap: 'linked',
      // lines above the code: a trace left unmapped would name other lines
      banner: { js: '/* a banner line */\n'.repeat(5) },
      logLevel: 'silent',
    });

    const r = spawnSync(process.execPath, [launcher, bundle, 'up', '--kvm', '2'], {
      encoding: 'utf8',
    });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { argv: string[]; stack: string; eol: string };
    // the bundle is argv[1], as if run directly; its arguments follow
    expect(out.argv).toEqual([bundle, 'up', '--kvm', '2']);
    // the frame of boom is the TypeScript line of the throw, not the bundle's
    expect(out.stack).toMatch(/boom 1\n\s+at boom \(.*app\.ts:3:\d+\)/);
    expect(out.eol).toBe('\n');
  });

  it("writes a service bundle's V8 code cache once, starts from it after, and not for the lab CLI", async () => {
    // a bundle that works a little at start (so that there is code to cache), then answers
    const app = path.join(dir, 'cached.ts');
    const source = (answer: number) =>
      [
        'const squares = Array.from({ length: 1000 }, (_, i) => i * i);',
        `setTimeout(() => console.log(squares.reduce((a, b) => a + b, 0) + ${answer}), 50);`,
        '',
      ].join('\n');
    const bundleAt = async (out: string, answer: number) => {
      writeFileSync(app, source(answer));
      await build({
        entryPoints: [app],
        outfile: out,
        bundle: true,
        platform: 'node',
        format: 'cjs',
        logLevel: 'silent',
      });
    };
    // written at once, not 3 s in: these processes live 50 ms
    const env = { ...process.env, MMLAB_CODE_CACHE_AFTER_MS: '0' };
    const run = (file: string) => {
      const r = spawnSync(process.execPath, [launcher, file], { encoding: 'utf8', env });
      expect(r.status, r.stderr).toBe(0);
      return Number(r.stdout.trim());
    };
    const svc = path.join(dir, 'svc', 'apps', 'mm', 'src', 'main.js');
    const cache = `${svc}.cache`;
    await bundleAt(svc, 1);
    expect(existsSync(cache)).toBe(false);
    expect(run(svc)).toBe(332_833_500 + 1);
    expect(existsSync(cache), 'the first start writes the cache').toBe(true);
    const first = statSync(cache);
    // the next start uses it: the same answer, and the cache is not written again (a start
    // writes it only when it found none or V8 refused it)
    expect(run(svc)).toBe(332_833_500 + 1);
    expect(statSync(cache).mtimeMs).toBe(first.mtimeMs);
    expect(statSync(cache).ino).toBe(first.ino);
    // another build: V8 refuses the old cache, the start goes on without it and replaces it
    await bundleAt(svc, 2);
    expect(run(svc)).toBe(332_833_500 + 2);
    expect(statSync(cache).ino).not.toBe(first.ino);

    // the lab CLI's bundle is run by require(), never from a cache (it import()s vega)
    const lab = path.join(dir, 'cli', 'apps', 'lab', 'src', 'main.js');
    await bundleAt(lab, 3);
    expect(run(lab)).toBe(332_833_500 + 3);
    expect(existsSync(`${lab}.cache`)).toBe(false);
  });

  it('refuses a missing bundle with a usage line', () => {
    const r = spawnSync(process.execPath, [launcher, path.join(dir, 'nope.js')], {
      encoding: 'utf8',
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/usage: launch\.js <bundle\.js>/);
  });
});
