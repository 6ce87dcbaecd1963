/**
 * `mmlab fsck [--redis URL] [--settle MS] [--json]`: check the lab's state in Redis (libs/fsck)
 * and print one line per finding. Exit 0 when clean, 1 with findings, 2 when the state cannot
 * be read (no Redis, no REDIS_URL).
 */
import { type FsckReport, formatFinding, fsckRedis } from '@mmlab/fsck';
import type { Io } from './run-command';

export interface FsckCommandOptions {
  redis?: string;
  /** keep reading until clean or this many ms passed (recovery of a dead replica in flight) */
  settle?: string;
  json?: boolean;
}

export async function fsckCommand(opts: FsckCommandOptions, io: Io): Promise<number> {
  const url = opts.redis ?? io.env.REDIS_URL;
  if (!url) {
    io.err('mmlab fsck: no Redis to check (give --redis URL or set REDIS_URL)');
    return 2;
  }
  const settleMs = Number(opts.settle ?? 0);
  if (!Number.isFinite(settleMs) || settleMs < 0) {
    io.err(`mmlab fsck: --settle ${opts.settle} is not a number of milliseconds`);
    return 2;
  }
  let report: FsckReport;
  try {
    report = await fsckRedis(url, { settleMs });
  } catch (e) {
    io.err(
      `mmlab fsck: cannot read the state at ${url}: ${e instanceof Error ? e.message : String(e)}`,
    );
    return 2;
  }
  if (opts.json) io.out(JSON.stringify(report, null, 2));
  else {
    for (const f of report.findings) io.out(formatFinding(f));
    io.out(
      report.ok
        ? `fsck: clean (${report.frames} frames, ${report.processes} address spaces)`
        : `fsck: ${report.findings.length} finding(s) (${report.frames} frames, ${report.processes} address spaces)`,
    );
  }
  return report.ok ? 0 : 1;
}
