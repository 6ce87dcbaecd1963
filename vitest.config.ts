import swc from 'unplugin-swc';
import { defineConfig } from 'vitest/config';
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
};

// Nest's dependency injection needs decorator metadata, which esbuild does not emit: SWC does.
const plugins = [swc.vite({ module: { type: 'es6' } })];

export default defineConfig({
  test: {
    // Integration files each start real nats-server/redis-server and services: one at a time on 2 cores.
    fileParallelism: false,
    projects: [
      {
        plugins,
        resolve: { alias },
        test: {
          name: 'unit',
          include: ['libs/**/*.spec.ts', 'apps/**/*.spec.ts'],
          environment: 'node',
        },
      },
      {
        plugins,
        resolve: { alias },
        test: {
          name: 'integration',
          include: ['test/**/*.e2e-spec.ts'],
          environment: 'node',
          testTimeout: 120_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
