/**
 * mmlab observer: `node dist/apps/observer/src/main.js`. Reads NATS_URL, MMLAB_INSTANCE
 * (default observer), MMLAB_OBSERVER_PORT, MMLAB_HTTP_HOST (default 127.0.0.1), MMLAB_LAB_TOKEN,
 * MMLAB_SOFTLOCKUP_MS, MMLAB_TRACE_FILE and MMLAB_OBSERVER_MAX_EVENTS. On SIGTERM or SIGINT it
 * closes the app (the intake drains, the trace file is flushed) and exits 0 (runService).
 */
import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { installCrashGuards, runService } from '@mmlab/runtime';
import { createObserverApp } from './observer.app';
import { loadObserverEnv } from './observer.config';

runService(
  async (onShutdown) => {
    const env = loadObserverEnv();
    installCrashGuards(env.MMLAB_INSTANCE);
    const app = await createObserverApp(env);
    onShutdown(() => app.close());
    await app.listen(env.MMLAB_OBSERVER_PORT, env.MMLAB_HTTP_HOST);
    new Logger(env.MMLAB_INSTANCE).log(
      `observer on http://${env.MMLAB_HTTP_HOST}:${env.MMLAB_OBSERVER_PORT}, NATS ${env.NATS_URL}` +
        (env.MMLAB_LAB_TOKEN ? '' : ' (no MMLAB_LAB_TOKEN: POST /reset is refused)'),
    );
  },
  // its own handlers' spans are not the lab's: the observer stays out of the traces it stores
  { service: 'observer', telemetry: false },
);
