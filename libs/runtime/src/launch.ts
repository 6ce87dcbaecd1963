/**
 * How a lab service process starts: `node dist/libs/runtime/src/launch.js <bundle> [args…]`.
 *
 * A service unbundled (dist/apps/<app>/src/main.js) resolves, stats and reads some 1,700
 * modules and their source maps before its first line runs: about a CPU-second each on the
 * 2-core machines the lab runs on, seven services a lab, and the test suite starts a lab dozens
 * of times. The build (scripts/bundle.mjs) makes each app one file,
 * dist/bundle/apps/<app>/src/main.js, and this launcher runs it as the main module.
 *
 * Stack traces still name the TypeScript sources: source-map-support reads the bundle's source
 * map when a trace is first formatted. node --enable-source-maps would read and parse every
 * map at start-up, which is much of what the bundle saves.
 *
 * Not done: V8's code cache (a vm.Script with cachedData) would save most of the compiling
 * left, but on Node 20 code loaded from a cache loses its import() loader (vega, ESM-only, is
 * loaded by import()), and Node 22's module.enableCompileCache() has no Node 20 equivalent.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { install } from 'source-map-support';

/** Run the CommonJS bundle at file as this process's main module, its traces source-mapped. */
export function launch(file: string): void {
  // The map is named after the bundle: reading the bundle (megabytes) to find its
  // sourceMappingURL comment, as source-map-support would, cost a second at the first trace.
  install({
    environment: 'node',
    handleUncaughtExceptions: false,
    retrieveSourceMap: (source) =>
      source === file && fs.existsSync(`${file}.map`)
        ? { url: `${file}.map`, map: fs.readFileSync(`${file}.map`, 'utf8') }
        : null,
  });
  // nats.js keeps `new Error('close trace').stack` at every connection close (for its own
  // debugging; nothing prints it): mapped, it made every service's stop parse the source map,
  // 60–200 ms of CPU each, several times per lab torn down. That one trace stays unmapped.
  const mapped = Error.prepareStackTrace?.bind(Error);
  Error.prepareStackTrace = (error, stack) =>
    error.message === 'close trace' || !mapped
      ? [
          String(error),
          ...stack.map(
            (f) =>
              `    at ${f.getFunctionName() ?? '<anonymous>'} (${f.getFileName() ?? '?'}:${f.getLineNumber()}:${f.getColumnNumber()})`,
          ),
        ].join('\n')
      : (mapped(error, stack) as unknown);
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- the bundle is loaded at run time, by path
  require(file);
}

if (require.main === module) {
  const file = path.resolve(process.argv[2] ?? '');
  if (!process.argv[2] || !fs.existsSync(file)) {
    process.stderr.write(`usage: launch.js <bundle.js> [args…] (${file} is missing)\n`);
    process.exit(2);
  }
  // The bundle sees the command line it would have seen run directly: node <bundle> args…
  process.argv.splice(1, 2, file);
  launch(file);
}
