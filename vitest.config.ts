import swc from 'unplugin-swc';
import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';
import * as path from 'node:path';

const alias = {
  '@mmlab/protocol': path.resolve(__dirname, 'libs/protocol/src'),
  '@mmlab/model': path.resolve(__dirname, 'libs/model/src'),
  '@mmlab/checker': path.resolve(__dirname, 'libs/checker/src'),
  '@mmlab/runtime': path.resolve(__dirname, 'libs/runtime/src'),
  '@mmlab/runner': path.resolve(__dirname, 'libs/runner/src'),
  '@mmlab/subscriber': path.resolve(__dirname, 'libs/subscriber/src'),
  '@mmlab/testing': path.resolve(__dirname, 'libs/testing/src'),
  '@mmlab/scenario': path.resolve(__dirname, 'libs/scenario/src'),
  '@mmlab/diagram': path.resolve(__dirname, 'libs/diagram/src'),
  '@mmlab/fsck': path.resolve(__dirname, 'libs/fsck/src'),
};

// Nest's dependency injection needs decorator metadata, which esbuild does not emit: SWC does.
const plugins = [swc.vite({ module: { type: 'es6' } })];

/**
 * Integration files whose scenarios hit their races by timing (chaos windows and workloads
 * running against slow, paused or killed services): they run one at a time, after everything
 * else, on an otherwise idle machine. The other integration files run two at a time (each starts
 * its own nats-server, redis-server and services on free ports), the chaos examples whose checks
 * do not depend on timing among them (test/chaos-restarts.e2e-spec.ts).
 */
const SERIAL = ['test/chaos.e2e-spec.ts'];

/**
 * Unit files that replace a module (vi.mock): a project of their own, so that scripts/test.sh can
 * run the rest without isolation (their modules shared within a worker) and these isolated.
 */
const MOCKING = ['apps/lab/src/report/diagram.spec.ts'];

/**
 * The longest integration files (seconds, a clean-clone CI run on 2 cores with two files at a
 * time), started first: with two workers, the last long file to start sets the end. Without a
 * cache vitest starts the larger files first, and mm-crash-points and examples (short files, long
 * runs) started late; replaying two CI runs' durations, longest-first ends the parallel part
 * 36–45 s sooner. Rough numbers are enough; a file missing here runs after them.
 */
const LONGEST: Record<string, number> = {
  // the last clean-clone CI run (two files at a time, 2026-12-06), examples.e2e less the three of
  // its 21 runs now made by thp.e2e and kvm.e2e only (CHECKED_ELSEWHERE there)
  'test/examples.e2e-spec.ts': 146,
  'test/mm-crash-points.e2e-spec.ts': 109,
  'test/mmlab-chaos.e2e-spec.ts': 90,
  'test/kvm-examples.e2e-spec.ts': 81,
  'test/thp.e2e-spec.ts': 72,
  'test/notifier.e2e-spec.ts': 56,
  'test/mm-crash-fork-cow.e2e-spec.ts': 52,
  // with mm-killed-holding-ptl (18 s) and the schedule's two runs at once (13 s), moved here
  // from the serial chaos.e2e
  'test/chaos-restarts.e2e-spec.ts': 85,
  'test/files-examples.e2e-spec.ts': 51,
  'test/seed-examples.e2e-spec.ts': 50,
  'test/bench-quick.e2e-spec.ts': 43,
  'test/kvm.e2e-spec.ts': 34,
  // measured alone at load 10-28 (other engineers' runs): 129-199 s and 50 s
  'test/mm-crash-reclaim-ksm-kvm.e2e-spec.ts': 130,
  'test/mm-crash-huge.e2e-spec.ts': 40,
  // measured alone: 35 s on an idle machine, 76 s at load 16 (one lab, SIGTERM and restart of
  // every service)
  'test/shutdown.e2e-spec.ts': 40,
  'test/reclaim.e2e-spec.ts': 30,
  'test/hugetlb.e2e-spec.ts': 28,
  'test/dashboard.e2e-spec.ts': 25,
  'test/ksm.e2e-spec.ts': 25,
  // the clean-clone run of 2026-12-05 20:49
  'test/mm-replica-death.e2e-spec.ts': 30,
  'test/mmlab-run-lab.e2e-spec.ts': 25,
  'test/hca.e2e-spec.ts': 22,
  'test/server-chaos.e2e-spec.ts': 19,
  'test/reclaim-examples.e2e-spec.ts': 19,
  // fuzz: 141 s alone at load 13-18 (about 110 CPU-seconds: 50,000 messages over 50 subjects)
  'test/fuzz-nats.e2e-spec.ts': 100,
  // 28,000 requests over 28 endpoints: 32 s alone (about 26 CPU-seconds), 2026-12-06
  'test/fuzz-http.e2e-spec.ts': 32,
  // mmlab up --byo, two device processes, the conform battery and one buggy scenario: 17 s
  // alone at load 3-5 (10-20 CPU-seconds), 2026-12-06
  'test/byo-conform.e2e-spec.ts': 17,
};

/**
 * Longest first: by the duration vitest's cache has for a file (a run on this machine), else by
 * LONGEST, else as vitest orders it (larger files first).
 */
class LongestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const base = await super.sort(files);
    const ms = (f: TestSpecification): number => {
      const rel = path.relative(this.ctx.config.root, f.moduleId);
      const cached = this.ctx.cache.getFileTestResults(`${f.project.name}:${rel}`);
      return cached?.duration ?? (LONGEST[rel] ?? 0) * 1000;
    };
    return [...base].sort((a, b) => ms(b) - ms(a));
  }
}

const integration = { environment: 'node', testTimeout: 120_000, hookTimeout: 120_000 } as const;

export default defineConfig({
  test: {
    // 2 cores: two test files at a time (three were tried: 869 s against 825 s, the cores
    // already busy and every file slower).
    maxWorkers: 2,
    sequence: { sequencer: LongestFirst },
    projects: [
      {
        plugins,
        resolve: { alias },
        test: {
          name: 'unit',
          include: ['libs/**/*.spec.ts', 'apps/**/*.spec.ts'],
          exclude: MOCKING,
          environment: 'node',
        },
      },
      {
        plugins,
        resolve: { alias },
        test: { name: 'unit-isolated', include: MOCKING, environment: 'node' },
      },
      {
        plugins,
        resolve: { alias },
        test: {
          name: 'integration',
          include: ['test/**/*.e2e-spec.ts'],
          exclude: SERIAL,
          ...integration,
        },
      },
      {
        plugins,
        resolve: { alias },
        test: {
          name: 'integration-serial',
          include: SERIAL,
          ...integration,
          sequence: { groupOrder: 1 },
          poolOptions: { forks: { singleFork: true } },
        },
      },
    ],
  },
});
