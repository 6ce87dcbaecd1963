/**
 * mmlab observer: `node dist/apps/observer/src/main.js`. Reads NATS_URL, MMLAB_INSTANCE
 * (default observer), MMLAB_OBSERVER_PORT, MMLAB_SOFTLOCKUP_MS, MMLAB_TRACE_FILE and
 * MMLAB_OBSERVER_MAX_EVENTS; serves HTTP on 0.0.0.0.
 */
import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { installCrashGuards } from '@mmlab/runtime';
import { createObserverApp } from './observer.app';
import { loadObserverEnv } from './observer.config';

async function bootstrap(): Promise<void> {
  const env = loadObserverEnv();
  installCrashGuards(env.MMLAB_INSTANCE);
  const app = await createObserverApp(env);
  app.enableShutdownHooks();
  await app.listen(env.MMLAB_OBSERVER_PORT, '0.0.0.0');
  new Logger(env.MMLAB_INSTANCE).log(
    `observer on http://0.0.0.0:${env.MMLAB_OBSERVER_PORT}, NATS ${env.NATS_URL}`,
  );
}

bootstrap().catch((e: unknown) => {
  new Logger('observer').error(e instanceof Error ? (e.stack ?? e.message) : String(e));
  process.exit(1);
});
