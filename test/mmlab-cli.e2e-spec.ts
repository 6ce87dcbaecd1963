/**
 * The command line's options as a new user mistypes them (the built CLI, so build first): a
 * bad option of `mmlab up` is one line on stderr and exit 2, before anything starts, never a
 * stack trace; `scripts/lab.sh` checks its options the same way before it installs or builds.
 */
import { execFile } from 'node:child_process';
import { statSync } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '@mmlab/runner';
import { runMmlab } from '@mmlab/testing';

const root = repoRoot();

/** stderr is exactly one line, with no stack frame */
function oneLine(stderr: string): string {
  const lines = stderr.trim().split('\n');
  expect(lines).toHaveLength(1);
  expect(stderr).not.toMatch(/^\s+at /m);
  return lines[0];
}

describe('mmlab up: options checked before anything starts', () => {
  it.each([
    [['--mode', 'bogus'], /--mode.*bogus.*patched, legacy/],
    [['--frames', 'abc'], /--frames must be an integer ≥ 1, got abc/],
    [['--hca', '-1'], /--hca must be an integer ≥ 0, got -1/],
    [['--kvm', '1', '--mmu-lock', 'rwlock'], /--mmu-lock.*rwlock.*spin, sleep, generation/],
    [['--api-port', '99999'], /--api-port must be a port number/],
    [['--invalidate-latency', 'gauss:1'], /--invalidate-latency: bad latency/],
  ])('mmlab up %j: exit 2, one line', async (args, message) => {
    const r = await runMmlab(['up', ...args]);
    expect(r.code).toBe(2);
    expect(oneLine(r.stderr)).toMatch(message);
    expect(r.stdout).not.toMatch(/mmlab is up/);
  });

  it('mmlab up --check with good options says what it would start, and starts nothing', async () => {
    const r = await runMmlab(['up', '--mode', 'legacy', '--hca', '2', '--check']);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe('options ok: legacy, 256 frames, 4 CPUs, 2 mm replicas, 2 HCAs');
    const k = await runMmlab(['up', '--kvm', '2', '--mmu-lock', 'sleep', '--check']);
    expect(k.code).toBe(0);
    expect(k.stdout.trim()).toBe(
      'options ok: patched, 256 frames, 4 CPUs, 2 mm replicas, 1 HCA, 2 KVMs (mmu_lock sleep)',
    );
  });

  it('scripts/lab.sh --mode bogus: one line, exit 2, no build', async () => {
    const stamp = path.join(root, 'dist', '.build-stamp');
    const before = (() => {
      try {
        return statSync(stamp).mtimeMs;
      } catch {
        return null;
      }
    })();
    const r = await promisify(execFile)(path.join(root, 'scripts', 'lab.sh'), ['--mode', 'bogus'], {
      cwd: root,
    }).then(
      () => ({ code: 0, stdout: '', stderr: '' }),
      (e: { code: number; stdout: string; stderr: string }) => e,
    );
    expect(r.code).toBe(2);
    expect(oneLine(r.stderr)).toMatch(/--mode.*bogus/);
    expect(r.stdout).not.toMatch(/building|installing/);
    const after = (() => {
      try {
        return statSync(stamp).mtimeMs;
      } catch {
        return null;
      }
    })();
    expect(after).toBe(before);
  });
});
