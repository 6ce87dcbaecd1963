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
 * V8's code cache saves most of the compiling left (about 0.12 CPU-s of a service's 0.5 s
 * start; 0.75 of the 3.5 CPU-s of `mmlab run examples/anon-basic.yaml`): a service's bundle runs
 * as a vm.Script compiled with the cached data of an earlier start (<bundle>.cache, written once
 * by the first process that found none or found it stale: made from another source, which its
 * digest says, or by another V8, which V8 refuses). MMLAB_CODE_CACHE=0 turns it off.
 *
 * On Node 20 a function deserialized from the cache has lost its import() loader
 * (ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING, even with vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
 * and in code made by new Function there). So the bundles have no import() left
 * (scripts/bundle.mjs: dynamic-import off, OTLP's import('http') becomes a require) and the
 * lab CLI's bundle is not cached: it loads vega, ESM-only with top-level await, by import().
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import Module from 'node:module';
import * as path from 'node:path';
import * as vm from 'node:vm';
import { install } from 'source-map-support';

/** The lab CLI's bundle: it import()s vega (see above). */
const UNCACHED = /[/\\]apps[/\\]lab[/\\]src[/\\]main\.js$/;

/**
 * How long after start the cache is written: by then start-up's lazily compiled functions are
 * in (MMLAB_CODE_CACHE_AFTER_MS: test/launch.e2e's short-lived bundles).
 */
const cacheAfterMs = (): number => Number(process.env.MMLAB_CODE_CACHE_AFTER_MS ?? 3_000);

/**
 * Run the CommonJS bundle at file as require() would (its own module, require and __dirname),
 * compiled with V8's code cache at <file>.cache when there is a usable one; without one, write
 * it cacheAfterMs() later (to a temporary file renamed into place: several services start from
 * the same bundle at once).
 */
function runCached(file: string): void {
  const cacheFile = `${file}.cache`;
  // a hashbang is legal only at the very start of a script: commented out, lines kept
  const source = fs.readFileSync(file, 'utf8').replace(/^#!/, '//');
  // V8 checks cached data against the source's length only: a rebuild of the same length
  // (a constant changed) would run the old code. The file starts with the source's digest.
  const digest = createHash('sha256').update(source).digest();
  let cachedData: Buffer | undefined;
  try {
    const c = fs.readFileSync(cacheFile);
    if (c.subarray(0, digest.length).equals(digest)) cachedData = c.subarray(digest.length);
  } catch {
    cachedData = undefined;
  }
  const script = new vm.Script(Module.wrap(source), {
    filename: file,
    cachedData,
    importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  });
  const m = new Module(file, module);
  m.filename = file;
  m.paths = (Module as unknown as { _nodeModulePaths(dir: string): string[] })._nodeModulePaths(
    path.dirname(file),
  );
  const wrapper = script.runInThisContext() as (...args: unknown[]) => void;
  if (cachedData === undefined || script.cachedDataRejected)
    setTimeout(() => {
      try {
        const tmp = `${cacheFile}.${process.pid}`;
        fs.writeFileSync(tmp, Buffer.concat([digest, script.createCachedData()]));
        fs.renameSync(tmp, cacheFile);
      } catch {
        // a read-only dist: start without the cache next time too
      }
    }, cacheAfterMs()).unref();
  wrapper.call(m.exports, m.exports, Module.createRequire(file), m, file, path.dirname(file));
  m.loaded = true;
}

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
  if (process.env.MMLAB_CODE_CACHE === '0' || UNCACHED.test(file)) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- the bundle is loaded at run time, by path
    require(file);
    return;
  }
  runCached(file);
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
