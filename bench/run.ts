/**
 * `npm run bench`: every benchmark of issues 11 and 12, or the ones named.
 *
 *   npm run bench                       all of them (builds first)
 *   npm run bench -- fault-floor        one (or several names)
 *   npm run bench -- --quick            the seconds-long variants (what the test suite runs),
 *                                       on shared labs (bench/lib/labs.ts)
 *   npm run bench -- --out DIR          where NAME.json and NAME.svg go (default bench/results)
 *
 * Prints progress on stderr, then the table (name, figure, target, met?) and the per-operation
 * counts on stdout. Exit 0 when every benchmark ran (a target missed is a figure, not an error),
 * 1 when one failed to run, 2 on a bad argument.
 */
import * as path from 'node:path';
import { repoRoot } from '@mmlab/runner';
import {
  type BenchResult,
  formatCounts,
  formatTable,
  runBenchmark,
  writeResult,
} from './lib/harness';
import { SharedLabs } from './lib/labs';
import { BENCHMARKS } from './suite';

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  let quick = false;
  let out = path.join(repoRoot(), 'bench', 'results');
  const names: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') quick = true;
    else if (a === '--out' && i + 1 < argv.length) out = path.resolve(argv[++i]);
    else if (a.startsWith('-')) {
      console.error(`unknown option ${a}`);
      return 2;
    } else names.push(a);
  }
  const known = new Set(BENCHMARKS.map((b) => b.name));
  const unknown = names.filter((n) => !known.has(n));
  if (unknown.length) {
    console.error(`no benchmark ${unknown.join(', ')}; there are: ${[...known].join(', ')}`);
    return 2;
  }
  const chosen = names.length ? BENCHMARKS.filter((b) => names.includes(b.name)) : BENCHMARKS;
  const results: BenchResult[] = [];
  const failed: string[] = [];
  const log = (l: string) => console.error(l);
  const labs = quick ? new SharedLabs() : undefined;
  for (const b of chosen) {
    log(`== ${b.name}${quick ? ' (quick)' : ''}`);
    try {
      const r = await runBenchmark(b, { quick, log, labs });
      const files = await writeResult(r, out);
      log(`${b.name}: ${r.figure.text} (${r.durationS} s) → ${files.json}`);
      results.push(r);
    } catch (e) {
      failed.push(
        `${b.name}: did not run to the end: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`,
      );
      log(`${b.name} FAILED: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    }
  }
  try {
    await labs?.stop();
  } catch (e) {
    failed.push(`the shared labs: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`);
  }
  console.log(formatTable(results));
  const counts = results.map(formatCounts).filter((c): c is string => c !== null);
  if (counts.length) console.log(`\nper operation:\n${counts.map((c) => `  ${c}`).join('\n')}`);
  if (failed.length) console.log(`\nfailed:\n${failed.map((f) => `  ${f}`).join('\n')}`);
  return failed.length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
