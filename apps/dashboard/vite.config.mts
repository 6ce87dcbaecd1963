/**
 * The live dashboard: `npm run build:dashboard` writes dist/dashboard, which the observer
 * serves at / and /dashboard. `npx vite --config apps/dashboard/vite.config.mts` serves it
 * in development, proxying the observer's API (MMLAB_OBSERVER_URL, default :8080).
 * (.mts, not .ts: the repository's tsconfig, with CommonJS resolution, does not take it.)
 */
import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

const here = new URL('.', import.meta.url).pathname;
const repo = new URL('../..', import.meta.url).pathname;
const observer = process.env.MMLAB_OBSERVER_URL ?? 'http://127.0.0.1:8080';

export default defineConfig({
  root: here,
  // relative asset URLs: the same build works at / and at /dashboard
  base: './',
  plugins: [react()],
  resolve: {
    alias: {
      '@mmlab/diagram': `${repo}libs/diagram/src`,
      '@mmlab/protocol': `${repo}libs/protocol/src`,
    },
  },
  build: {
    outDir: `${repo}dist/dashboard`,
    emptyOutDir: true,
    target: 'es2022',
    reportCompressedSize: false,
  },
  server: {
    proxy: Object.fromEntries(
      ['/stream', '/events', '/invariants', '/stats', '/reset', '/api'].map((p) => [p, observer]),
    ),
  },
});
