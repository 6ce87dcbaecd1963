/**
 * A real redis-server and a Store on it, for the files that test the model's scripts directly:
 * started once per file, flushed and formatted with `frames` frames before each test, stopped
 * after the file. `use` receives the Store once it is up.
 */
import { afterAll, beforeAll, beforeEach } from 'vitest';
import { Store } from '@mmlab/model';
import { type ServerHandle, startRedis } from '@mmlab/runner';

export function withRedisStore(frames: number, use: (store: Store) => void): void {
  let redis: ServerHandle;
  let store: Store;
  beforeAll(async () => {
    redis = await startRedis();
    store = new Store(redis.url);
    use(store);
  });
  afterAll(async () => {
    await store.quit();
    await redis.stop();
  });
  beforeEach(async () => {
    await store.redis.flushall();
    await store.memFormat(frames);
  });
}
