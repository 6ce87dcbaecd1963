import { mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  natsUrlFile,
  natsUrlWithCredentials,
  removeNatsUrlFile,
  writeNatsUrlFile,
} from './token-file';

describe("the lab owner's NATS credentials, left by mmlab up for mmlab run", () => {
  const env = { MMLAB_RUNTIME_DIR: path.join(mkdtempSync(path.join(tmpdir(), 'mmlab-rt-')), 'rt') };
  const withCreds = 'nats://lab:s3cret@127.0.0.1:4999';

  it('are found for a NATS_URL without credentials, on the same port only; a file only its owner reads', () => {
    expect(natsUrlWithCredentials('nats://127.0.0.1:4999', env)).toBe('nats://127.0.0.1:4999');
    const file = writeNatsUrlFile(4999, withCreds, env);
    expect(file).toBe(natsUrlFile(4999, env));
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(natsUrlWithCredentials('nats://127.0.0.1:4999', env)).toBe(withCreds);
    expect(natsUrlWithCredentials('nats://127.0.0.1:5000', env)).toBe('nats://127.0.0.1:5000');
    // credentials given win
    expect(natsUrlWithCredentials('nats://me:pw@127.0.0.1:4999', env)).toBe(
      'nats://me:pw@127.0.0.1:4999',
    );
    // another lab's URL is not removed; this lab's is
    removeNatsUrlFile(4999, 'nats://lab:other@127.0.0.1:4999', env);
    expect(natsUrlWithCredentials('nats://127.0.0.1:4999', env)).toBe(withCreds);
    removeNatsUrlFile(4999, withCreds, env);
    expect(natsUrlWithCredentials('nats://127.0.0.1:4999', env)).toBe('nats://127.0.0.1:4999');
  });
});
