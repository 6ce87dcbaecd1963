#!/usr/bin/env node
// Part of `npm run build`, after tsc: each app (dist/apps/<app>/src/main.js) as one file,
// dist/bundle/apps/<app>/src/main.js with its source map, which libs/runtime/src/launch.ts runs
// with V8's code cache (why: that file's header). The same paths below dist/bundle as below
// dist, so what a service finds by walking up from its own directory (the repository root, the
// dashboard build) it finds from the bundle too.
//
// Bundled from tsc's output, not from the TypeScript: Nest's dependency injection needs the
// decorator metadata tsc emits and esbuild does not.
import { build } from 'esbuild';
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { SourceMapConsumer, SourceMapGenerator } from 'source-map';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const dist = path.join(root, 'dist');
const out = path.join(dist, 'bundle');
const require = createRequire(import.meta.url);

// Nest loads its optional integrations (websockets, gRPC, class-validator, ORMs …) with a
// guarded require; one that is not installed stays a require, failing at run time only if
// used, exactly as unbundled.
const optionalPeers = {
  name: 'optional-peers',
  setup(b) {
    b.onResolve({ filter: /^[^./]/ }, (args) => {
      try {
        require.resolve(args.path, { paths: [args.resolveDir || root] });
        return undefined;
      } catch {
        return { path: args.path, external: true };
      }
    });
  },
};

// The bundle's source map keeps the mappings of mmlab's own code only (to its TypeScript,
// through tsc's maps): a stack trace is mapped when first formatted (launch.ts), and a map of
// every dependency (1,700 sources, 11 MB) took seconds of CPU to read then. Dependencies' frames
// keep their bundle positions and names.
async function ownCodeOnly(mapFile) {
  const raw = JSON.parse(readFileSync(mapFile, 'utf8'));
  const own = new SourceMapGenerator({ file: raw.file });
  await SourceMapConsumer.with(raw, null, (c) =>
    c.eachMapping((m) => {
      if (!m.source || m.source.includes('node_modules/')) return;
      own.addMapping({
        generated: { line: m.generatedLine, column: m.generatedColumn },
        original: { line: m.originalLine, column: m.originalColumn },
        source: m.source,
        name: m.name ?? undefined,
      });
    }),
  );
  writeFileSync(mapFile, own.toString());
}

const apps = readdirSync(path.join(dist, 'apps')).filter((a) =>
  existsSync(path.join(dist, 'apps', a, 'src', 'main.js')),
);
rmSync(out, { recursive: true, force: true });
await Promise.all(
  apps.map(async (a) => {
    const outfile = path.join(out, 'apps', a, 'src', 'main.js');
    await build({
      entryPoints: [path.join(dist, 'apps', a, 'src', 'main.js')],
      outfile,
      bundle: true,
      platform: 'node',
      target: 'node20',
      format: 'cjs',
      sourcemap: 'linked',
      sourcesContent: false,
      // Nest names providers and logs by class name
      keepNames: true,
      // Whitespace and syntax only (identifiers keep their names: traces and Nest's logs stay
      // readable): a third smaller, and without comments the services' bundles are ASCII,
      // which Node reads into a one-byte string (a few dozen comment lines in other scripts
      // made the whole 7 MB a two-byte string: twice the bytes to decode and scan at every
      // start; the lab CLI's report template still has some).
      minifyWhitespace: true,
      minifySyntax: true,
      legalComments: 'none',
      // import() of a module left outside the bundle (OTLP's exporter: import('http')) becomes
      // require(): the bundle runs from V8's code cache (libs/runtime/src/launch.ts), and on
      // Node 20 a function deserialized from the cache has lost its import() loader (every
      // span export failed with it). The lab's vega, ESM-only, is loaded by a new Function's
      // import(), which is not in the cached script.
      supported: { 'dynamic-import': false },
      logLevel: 'warning',
      plugins: [optionalPeers],
    });
    await ownCodeOnly(`${outfile}.map`);
  }),
);
