/**
 * The command line of every generated document (docs/protocol.md, docs/redis.md,
 * docs/subscriber-protocol.md): `node gen-doc.js [FILE]` writes it, `--check` fails (exit 1,
 * saying how to regenerate it) when FILE is not what the code would write. scripts/test.sh
 * runs each with --check.
 */
import { readFileSync, writeFileSync } from 'node:fs';

export function docMain(
  argv: readonly string[],
  defaultFile: string,
  make: () => string,
  regenerate: string,
): void {
  const check = argv.includes('--check');
  const file = argv.find((a) => !a.startsWith('--')) ?? defaultFile;
  const doc = make();
  if (!check) {
    writeFileSync(file, doc);
    console.log(`wrote ${file}`);
    return;
  }
  let cur = '';
  try {
    cur = readFileSync(file, 'utf8');
  } catch {
    /* missing counts as stale */
  }
  if (cur !== doc) {
    console.error(`${file} is out of date: run ${regenerate}`);
    process.exit(1);
  }
  console.log(`${file} is up to date`);
}
