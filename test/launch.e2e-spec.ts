/**
 * The launcher every lab process starts through (libs/runtime/src/launch.ts): it runs a bundle
 * with the command line it would have had run directly, keeps Node's own import() working in
 * it (the report loads the ESM-only vega so), and maps stack traces to the TypeScript sources.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
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

  it('refuses a missing bundle with a usage line', () => {
    const r = spawnSync(process.execPath, [launcher, path.join(dir, 'nope.js')], {
      encoding: 'utf8',
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/usage: launch\.js <bundle\.js>/);
  });
});
