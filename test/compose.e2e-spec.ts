/**
 * The docker compose lab, checked statically on this Docker-less machine: the Debian
 * `docker-compose` accepts the file with and without each profile, and it starts exactly what
 * the native runner starts, configured through the same variables on the same ports.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import {
  DEPLOYED_IDENTITIES,
  RPC,
  TRACE_REPLAY_SUBJECT,
  passwordVar as natsPasswordVar,
} from '@mmlab/protocol';
import { DEPLOYED_REDIS_KINDS, REDIS_KINDS, aclTemplate, redisPasswordVar } from '@mmlab/model';
import { EnvSchema } from '@mmlab/runtime';
import { LAB_PORTS, type LabConfig, labServices, repoRoot } from '@mmlab/runner';
// The lab API's port is the CLI's own constant (a test, not an app).
// eslint-disable-next-line no-restricted-imports
import { LAB_API_PORT } from '../apps/lab/src/api/lab-api';

const root = repoRoot();
const file = path.join(root, 'docker-compose.yml');

interface ComposeService {
  command?: string[];
  environment?: Record<string, string | number>;
  ports?: string[];
  profiles?: string[];
}
const compose = parse(readFileSync(file, 'utf8'), { merge: true }) as {
  services: Record<string, ComposeService>;
};

/** Every option the native runner knows, so that every variable it can set shows up. */
const everything: LabConfig = {
  mode: 'legacy',
  frames: 64,
  cpus: 2,
  mmReplicas: 2,
  leaseTtlMs: 1000,
  softlockupMs: 1000,
  faultDeadlineMs: 5000,
  dispatch: 'serial',
  inject: ['range-end-mismatch'],
  seed: 7,
  subscribers: [
    { name: 'hca0', kind: 'hca', invalidateLatencyMs: 10, npfDelayMs: 5 },
    { name: 'kvm0', kind: 'kvm', invalidateLatencyMs: 10, faultDelayMs: 5, mmuLock: 'sleep' },
  ],
  token: 'a-token-of-this-lab-only',
};
const native = labServices(everything, LAB_PORTS.observer);
/** Set per instance by the native runner; in compose, replicas derive them (hostname, a claimed CPU id). */
const PER_INSTANCE = new Set(['MMLAB_INSTANCE', 'MMLAB_CPU_ID']);
/** Only the native runner's test knobs, not lab settings. */
const NATIVE_ONLY = new Set(['MMLAB_FAULT_DEADLINE_MS']);
/** Read by the image's HEALTHCHECK and by the OpenTelemetry SDK, not by the lab's env schema. */
const OUTSIDE_SCHEMA = new Set(['MMLAB_HEALTH_PORT', 'OTEL_EXPORTER_OTLP_ENDPOINT']);

/** Does a native service use Redis (has an ACL user of its kind: libs/model acl.ts)? */
const usesRedis = (app: string): boolean => (REDIS_KINDS as readonly string[]).includes(app);
/** What scripts/secrets.sh writes to .env, for docker-compose config (any value will do). */
const redisSecrets: Record<string, string> = Object.fromEntries([
  ...REDIS_KINDS.map((k): [string, string] => [redisPasswordVar(k), `pw-${k}`]),
  ...DEPLOYED_IDENTITIES.map((who): [string, string] => [natsPasswordVar(who), `pw-${who.user}`]),
]);

describe('docker-compose.yml', () => {
  it.each([[[]], [['observability']], [['chaos']], [['observability', 'chaos']]])(
    'is accepted by docker-compose config with profiles %j',
    (profiles: string[]) => {
      // throws with docker-compose's own message (and fails the test) when the file is invalid
      const args = ['-f', file, ...profiles.flatMap((p) => ['--profile', p]), 'config', '-q'];
      const env = { ...process.env, ...redisSecrets };
      expect(
        execFileSync('docker-compose', args, { cwd: root, stdio: 'pipe', env }).toString(),
      ).toBe('');
    },
  );

  it('refuses to start without the Redis and NATS passwords: the file has none of its own', () => {
    const text = readFileSync(file, 'utf8');
    expect(text).not.toMatch(/NATS_\w+_PASSWORD:-/);
    const env = Object.fromEntries(
      Object.entries(process.env).filter(([k]) => !/^(REDIS|NATS)_\w+_PASSWORD$/.test(k)),
    );
    let err = '';
    try {
      execFileSync('docker-compose', ['-f', file, 'config', '-q'], {
        cwd: root,
        stdio: 'pipe',
        env,
      });
    } catch (e) {
      err = String((e as { stderr?: Buffer }).stderr);
    }
    expect(err).toMatch(/secrets\.sh/);
  });

  it('gives every service that uses Redis its own ACL user, and the observer none', () => {
    const text = readFileSync(file, 'utf8');
    // no shared or default Redis password is left anywhere in the file
    expect(text).not.toMatch(/REDIS_PASSWORD|requirepass|REDISCLI_AUTH/);
    expect(text).not.toMatch(/REDIS_\w+_PASSWORD:-/);
    const redis = compose.services.redis;
    for (const app of new Set(native.map((s) => s.app))) {
      const url = compose.services[app].environment?.REDIS_URL;
      if (!usesRedis(app)) {
        expect(url, `${app} uses no Redis`).toBeUndefined();
        continue;
      }
      const v = redisPasswordVar(app as (typeof REDIS_KINDS)[number]);
      expect(String(url), app).toMatch(
        new RegExp(`^redis://${app}:\\$\\{${v}:\\?[^}]+\\}@redis:6379$`),
      );
    }
    // the redis service is given every deployed user's password (not dev's: bring-your-own
    // devices join native labs only) and starts with the generated users
    for (const k of DEPLOYED_REDIS_KINDS)
      expect(redis.environment?.[redisPasswordVar(k)], k).toBe(
        `\${${redisPasswordVar(k)}:?run scripts/secrets.sh}`,
      );
    expect(redis.command?.slice(0, 2)).toEqual(['sh', '/etc/mmlab-redis/start.sh']);
    expect((redis as { volumes?: string[] }).volumes).toContain(
      './deploy/redis:/etc/mmlab-redis:ro',
    );
    expect(readFileSync(path.join(root, 'deploy', 'redis', 'users.acl'), 'utf8')).toBe(
      aclTemplate(),
    );
    // scripts/secrets.sh makes a password for exactly these users
    const script = readFileSync(path.join(root, 'scripts', 'secrets.sh'), 'utf8');
    expect(/^kinds=\(([^)]*)\)$/m.exec(script)?.[1].split(' ')).toEqual([...DEPLOYED_REDIS_KINDS]);
    expect(/^nats_users=\(([^)]*)\)$/m.exec(script)?.[1].split(' ')).toEqual(
      DEPLOYED_IDENTITIES.map((who) => who.user),
    );
  });

  it('starts the same services as the native runner', () => {
    const core = Object.entries(compose.services)
      .filter(([, s]) => !s.profiles)
      .map(([n]) => n)
      .sort();
    const nativeApps = [...new Set(native.map((s) => s.app)), 'nats', 'redis'].sort();
    expect(core).toEqual(nativeApps);
    for (const s of native)
      expect(compose.services[s.app].command, s.app).toEqual([`dist/apps/${s.app}/src/main.js`]);
  });

  it('configures each service through the variables the native runner sets, and only known ones', () => {
    const known = new Set(Object.keys(EnvSchema.shape));
    for (const s of native) {
      const env = compose.services[s.app].environment ?? {};
      const urls = ['NATS_URL', ...(usesRedis(s.app) ? ['REDIS_URL'] : [])];
      const nativeVars = [...Object.keys(s.env), ...urls].filter(
        (v) => !PER_INSTANCE.has(v) && !NATIVE_ONLY.has(v),
      );
      for (const v of nativeVars) expect(Object.keys(env), `${s.app} lacks ${v}`).toContain(v);
      for (const v of Object.keys(env))
        expect(
          known.has(v) || OUTSIDE_SCHEMA.has(v),
          `${s.app}: ${v} is not a variable the services read`,
        ).toBe(true);
    }
  });

  it('runs kvm0 with its mmu_lock mode, as its own NATS user, and lets Pumba slow it like hca0', () => {
    const kvm = compose.services.kvm;
    expect(kvm.environment?.MMLAB_INSTANCE).toBe('kvm0');
    expect(kvm.environment?.MMLAB_MMU_LOCK).toBe('${MMLAB_MMU_LOCK:-spin}');
    expect(String(kvm.environment?.NATS_URL)).toMatch(
      /^nats:\/\/kvm:\$\{NATS_KVM_PASSWORD:\?[^}]*\}@nats:4222$/,
    );
    expect(Object.keys(compose.services.nats.environment ?? {})).toContain('NATS_KVM_PASSWORD');
    const pumba = (compose.services.pumba.command ?? []).at(-1)!;
    const containers = Object.values(compose.services)
      .map((s) => (s as { container_name?: string }).container_name)
      .filter((n): n is string => n !== undefined);
    const re = new RegExp(pumba.replace(/^re2:/, ''));
    expect(containers.filter((n) => re.test(n)).sort()).toEqual(['mmlab-hca0', 'mmlab-kvm0']);
  });

  it('publishes the ports the native runner uses', () => {
    const published = (svc: string) =>
      (compose.services[svc].ports ?? []).map((p) => Number(String(p).split(':')[0]));
    expect(published('nats')).toContain(LAB_PORTS.nats);
    expect(published('redis')).toContain(LAB_PORTS.redis);
    expect(published('observer')).toContain(LAB_PORTS.observer);
    expect(compose.services.observer.environment?.MMLAB_OBSERVER_PORT).toBe(LAB_PORTS.observer);
  });

  it('binds every HTTP server to all interfaces, where natively they stay on 127.0.0.1', () => {
    // natively the variable is not set: EnvSchema's default, loopback
    for (const s of native) expect(s.env.MMLAB_HTTP_HOST, s.instance).toBeUndefined();
    expect(EnvSchema.shape.MMLAB_HTTP_HOST.parse(undefined)).toBe('127.0.0.1');
    for (const svc of [...new Set(native.map((s) => s.app)), 'lab-api'])
      expect(compose.services[svc].environment?.MMLAB_HTTP_HOST, svc).toBe('0.0.0.0');
  });

  it("takes the lab's token from the user's MMLAB_LAB_TOKEN, with no default in the file", () => {
    for (const svc of ['observer', 'lab-api'])
      expect(compose.services[svc].environment?.MMLAB_LAB_TOKEN, svc).toBe('${MMLAB_LAB_TOKEN:-}');
    // unset, it parses as no token (mutating requests are refused), not as an empty one
    expect(EnvSchema.shape.MMLAB_LAB_TOKEN.parse('')).toBeUndefined();
    expect(() => EnvSchema.shape.MMLAB_LAB_TOKEN.parse('short')).toThrow(/16 characters/);
  });

  describe('lab-api (the nemesis for `mmlab chaos`, profile chaos)', () => {
    const api = compose.services['lab-api'];
    const natsConf = readFileSync(path.join(root, 'deploy', 'nats', 'nats.conf'), 'utf8');
    /** The lab-api user's entry of nats.conf: its password variable and publish list. */
    const user =
      /\{\s*user:\s*lab-api,\s*password:\s*\$(\w+),[^]*?publish:\s*\[([^\]]*)\][^]*?subscribe:\s*\[([^\]]*)\]/.exec(
        natsConf,
      );
    const list = (s: string) => [...s.matchAll(/"([^"]+)"/g)].map((m) => m[1]);

    it('is `mmlab api` on LAB_API_PORT, in the chaos profile only, healthy on that port', () => {
      expect(api, 'docker-compose.yml has no lab-api service').toBeDefined();
      expect(api.profiles).toEqual(['chaos']);
      expect(api.command).toEqual([
        'dist/apps/lab/src/main.js',
        'api',
        '--port',
        String(LAB_API_PORT),
      ]);
      expect((api.ports ?? []).map(String)).toContain(`${LAB_API_PORT}:${LAB_API_PORT}`);
      // the image's HEALTHCHECK asks /health on MMLAB_HEALTH_PORT
      expect(api.environment?.MMLAB_HEALTH_PORT).toBe(LAB_API_PORT);
      const known = new Set(Object.keys(EnvSchema.shape));
      for (const v of Object.keys(api.environment ?? {}))
        expect(known.has(v) || OUTSIDE_SCHEMA.has(v), `lab-api: ${v} is not read`).toBe(true);
    });

    it('connects as its own NATS user, with a password the nats service is given', () => {
      expect(user, 'nats.conf has no lab-api user').not.toBeNull();
      const [, passwordVar] = user!;
      expect(String(api.environment?.NATS_URL)).toMatch(
        new RegExp(`^nats://lab-api:\\$\\{${passwordVar}:\\?[^}]*\\}@nats:4222$`),
      );
      expect(Object.keys(compose.services.nats.environment ?? {})).toContain(passwordVar);
    });

    it('may publish exactly what the nemesis sends: subChaos, ping, meminfo and its trace', () => {
      const [, , publish, subscribe] = user!;
      const wild = (name: keyof typeof RPC) => RPC[name].subject.replace('{id}', '*');
      expect(list(publish).sort()).toEqual(
        [wild('subChaos'), wild('ping'), wild('meminfo'), 'mmlab.trace.lab.>'].sort(),
      );
      // replies, and the observer's request to publish its recent trace events again
      // (below its own inbox prefix only: nobody else's replies)
      expect(list(subscribe)).toEqual(['_INBOX.lab-api.>', TRACE_REPLAY_SUBJECT]);
    });
  });
});
