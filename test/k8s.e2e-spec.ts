/**
 * deploy/k8s, validated against the Kubernetes API schemas (kubernetes-models: the OpenAPI
 * schemas of each kind, with their validators) — every manifest of the base, and every
 * overlay's patches aimed at resources that exist — without a cluster.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { parseAllDocuments, parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { ConfigMap, Namespace, Secret, Service } from 'kubernetes-models/v1';
import { Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { Job } from 'kubernetes-models/batch/v1';
import { LAB_PORTS, type LabConfig, labServices, repoRoot } from '@mmlab/runner';
import { REDIS_KINDS, aclTemplate, redisPasswordVar } from '@mmlab/model';
import { DEPLOYED_IDENTITIES, passwordVar } from '@mmlab/protocol';

const k8s = path.join(repoRoot(), 'deploy', 'k8s');
const MODELS: Record<string, new (o: never) => { validate(): void }> = {
  'v1/Namespace': Namespace,
  'v1/ConfigMap': ConfigMap,
  'v1/Secret': Secret,
  'v1/Service': Service,
  'apps/v1/Deployment': Deployment,
  'apps/v1/StatefulSet': StatefulSet,
  'batch/v1/Job': Job,
};

interface Container {
  readinessProbe?: unknown;
  args?: string[];
  env?: Array<{ name: string; value?: string; valueFrom?: { secretKeyRef?: { key: string } } }>;
}
interface Obj {
  apiVersion: string;
  kind: string;
  metadata: { name: string };
  data?: Record<string, string>;
  stringData?: Record<string, string>;
  spec?: {
    template?: { spec?: { containers?: Container[] } };
  };
}
interface Kustomization {
  resources: string[];
  patches?: Array<{ target: { kind: string; name: string }; patch: string }>;
}

const kustomization = (dir: string) =>
  parse(readFileSync(path.join(dir, 'kustomization.yaml'), 'utf8')) as Kustomization;
const base = path.join(k8s, 'base');
const objects: Obj[] = kustomization(base).resources.flatMap((f) =>
  parseAllDocuments(readFileSync(path.join(base, f), 'utf8')).map((d) => d.toJS() as Obj),
);

describe('deploy/k8s/base', () => {
  it('lists every manifest of the folder in its kustomization', () => {
    const files = readdirSync(base).filter(
      (f) => f.endsWith('.yaml') && f !== 'kustomization.yaml',
    );
    expect([...kustomization(base).resources].sort()).toEqual(files.sort());
  });

  it.each(objects.map((o) => [`${o.kind}/${o.metadata.name}`, o] as const))(
    '%s is valid against its Kubernetes schema',
    (_, o) => {
      const Model = MODELS[`${o.apiVersion}/${o.kind}`];
      expect(Model, `no schema model for ${o.apiVersion} ${o.kind}`).toBeDefined();
      expect(() => new Model(o as never).validate()).not.toThrow();
    },
  );

  it('has the tiers the issue asks for: a 3-node NATS, a Redis Cluster, mm/cpu/hca/kvm Deployments ready by /health, the observer behind a Service', () => {
    const find = (kind: string, name: string) =>
      objects.find((o) => o.kind === kind && o.metadata.name === name);
    expect(
      (find('StatefulSet', 'nats') as unknown as { spec: { replicas: number } }).spec.replicas,
    ).toBe(3);
    expect(find('StatefulSet', 'redis-cluster')).toBeDefined();
    for (const d of ['mm', 'cpu', 'hca', 'kvm']) {
      const c = find('Deployment', d)?.spec?.template?.spec?.containers?.[0];
      expect(c?.args, d).toEqual([`dist/apps/${d}/src/main.js`]);
      expect(c?.readinessProbe, d).toMatchObject({ httpGet: { path: '/health' } });
    }
    expect(find('Service', 'observer')).toBeDefined();
  });

  it('gives every Deployment that uses Redis its own ACL user from a generated Secret, the observer none', () => {
    const find = (kind: string, name: string) =>
      objects.find((o) => o.kind === kind && o.metadata.name === name);
    for (const app of ['mm', 'cpu', 'hca', 'kvm', 'observer']) {
      const env = find('Deployment', app)!.spec!.template!.spec!.containers![0].env ?? [];
      const url = env.find((e) => e.name === 'REDIS_URL')?.value;
      if (app === 'observer') {
        expect(url, 'the observer uses no Redis').toBeUndefined();
        continue;
      }
      expect(url, app).toMatch(new RegExp(`^redis\\+cluster://${app}:\\$\\(REDIS_PASSWORD\\)@`));
      expect(env.find((e) => e.name === 'REDIS_PASSWORD')?.valueFrom?.secretKeyRef).toEqual({
        name: 'mmlab-redis-users',
        key: redisPasswordVar(app as 'mm'),
      });
    }
    // no REDIS_URL for all, and the Secret is generated (scripts/secrets.sh), not committed
    expect(find('ConfigMap', 'mmlab-config')?.data?.REDIS_URL).toBeUndefined();
    expect(find('Secret', 'mmlab-redis-users')).toBeUndefined();
    expect(find('Secret', 'mmlab-nats-users')).toBeUndefined();
    const kz = parse(readFileSync(path.join(base, 'kustomization.yaml'), 'utf8')) as {
      secretGenerator?: Array<{ name: string; envs?: string[] }>;
    };
    expect(kz.secretGenerator).toContainEqual({
      name: 'mmlab-nats-users',
      envs: ['nats-users.env'],
    });
    expect(kz.secretGenerator).toContainEqual({
      name: 'mmlab-redis-users',
      envs: ['redis-users.env'],
    });
    expect(readFileSync(path.join(repoRoot(), '.gitignore'), 'utf8')).toMatch(
      /^deploy\/k8s\/base\/redis-users\.env$/m,
    );
    // every node starts with the generated users; no password is written in the manifests
    const acl = find('ConfigMap', 'mmlab-redis-acl')!.data!;
    expect(acl['users.acl']).toBe(aclTemplate());
    expect(acl['start.sh']).toBe(
      readFileSync(path.join(repoRoot(), 'deploy', 'redis', 'start.sh'), 'utf8'),
    );
    const sts = find('StatefulSet', 'redis-cluster') as unknown as {
      spec: { template: { spec: { containers: Array<{ command?: string[] }> } } };
    };
    expect(sts.spec.template.spec.containers[0].command).toEqual([
      'sh',
      '/etc/mmlab-redis/start.sh',
    ]);
    const manifests = kustomization(base)
      .resources.map((f) => readFileSync(path.join(base, f), 'utf8'))
      .join('\n');
    expect(manifests).not.toMatch(/requirepass|REDISCLI_AUTH|REDIS_PASSWORD:/);
  });

  it('catches an invalid manifest (the validation can fail)', () => {
    const bad = structuredClone(objects.find((o) => o.kind === 'Deployment')!) as unknown as {
      spec: { replicas: unknown };
    };
    bad.spec.replicas = 'two';
    expect(() => new Deployment(bad as never).validate()).toThrow(/replicas/);
  });
});

describe('deploy/k8s/overlays', () => {
  const overlays = readdirSync(path.join(k8s, 'overlays')).filter((d) =>
    statSync(path.join(k8s, 'overlays', d)).isDirectory(),
  );
  it.each(overlays)('%s patches resources that exist in the base', (name) => {
    const k = kustomization(path.join(k8s, 'overlays', name));
    expect(k.resources).toEqual(['../../base']);
    for (const p of k.patches ?? []) {
      expect(
        objects.some((o) => o.kind === p.target.kind && o.metadata.name === p.target.name),
        `${p.target.kind}/${p.target.name}`,
      ).toBe(true);
      const ops = parse(p.patch) as Array<{ op: string; path: string; value: unknown }>;
      for (const op of ops) expect(op.path).toMatch(/^\/spec\//);
    }
  });
});

/**
 * The three ways to run the lab start the same thing: what the native runner starts
 * (libs/runner labServices, every subscriber kind included), compose runs (test/compose.e2e-spec
 * holds compose to the runner) and the k8s base runs — each service as its own NATS user with
 * the same permissions in deploy/nats/nats.conf (compose) and the k8s NATS config.
 */
describe('parity: native runner, compose and the k8s base', () => {
  const root = repoRoot();
  const cfg: LabConfig = {
    mode: 'patched',
    frames: 64,
    cpus: 1,
    mmReplicas: 1,
    subscribers: [
      { name: 'hca0', kind: 'hca', invalidateLatencyMs: 5 },
      { name: 'kvm0', kind: 'kvm', invalidateLatencyMs: 5, mmuLock: 'generation' },
    ],
    token: 'a-token-of-this-lab-only',
  };
  const native = labServices(cfg, LAB_PORTS.observer);
  const apps = [...new Set(native.map((s) => s.app))].sort();
  const compose = parse(readFileSync(path.join(root, 'docker-compose.yml'), 'utf8'), {
    merge: true,
  }) as { services: Record<string, { environment?: Record<string, string | number> }> };
  const deployment = (app: string) =>
    objects.find((o) => o.kind === 'Deployment' && o.metadata.name === app);
  const configMap = objects.find(
    (o) => o.kind === 'ConfigMap' && o.metadata.name === 'mmlab-config',
  )!;
  /** The NATS passwords scripts/secrets.sh writes for the Secret mmlab-nats-users (generated). */
  const natsSecretKeys = DEPLOYED_IDENTITIES.map(passwordVar);
  /** Set per instance where replicas derive them, or a native test knob (a hook, not a setting). */
  const NOT_DEPLOYED = new Set(['MMLAB_CPU_ID', 'MMLAB_FAULT_DEADLINE_MS', 'MMLAB_NPF_DELAY_MS']);

  /** user → its publish and subscribe lists and allow_responses, from a nats.conf text. */
  function natsUsers(conf: string): Map<string, { password: string; perms: string }> {
    const out = new Map<string, { password: string; perms: string }>();
    const list = (s: string | undefined) => [...(s ?? '').matchAll(/"([^"]+)"/g)].map((m) => m[1]);
    for (const m of conf.matchAll(
      /\{\s*user:\s*([\w-]+),\s*password:\s*\$(\w+),\s*permissions:\s*\{((?:[^{}]|\{[^{}]*\})*)\}\s*\}/g,
    )) {
      const body = m[3];
      const pub = /publish:\s*\[([^\]]*)\]/.exec(body)?.[1];
      const sub = /subscribe:\s*\[([^\]]*)\]/.exec(body)?.[1];
      const perms = JSON.stringify({
        publish: list(pub).sort(),
        subscribe: list(sub).sort(),
        allowResponses: /allow_responses:\s*(true|\{[^}]*\})/.exec(body)?.[1] ?? false,
      });
      out.set(m[1], { password: m[2], perms });
    }
    return out;
  }
  const composeNats = natsUsers(
    readFileSync(path.join(root, 'deploy', 'nats', 'nats.conf'), 'utf8'),
  );
  const k8sNats = natsUsers(
    objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === 'nats-config')!.data![
      'nats.conf'
    ],
  );
  const userOf = (url: string | number | undefined) => /^nats:\/\/([\w-]+):/.exec(String(url))?.[1];

  it('reads NATS users from both configs (the parser finds them)', () => {
    expect(composeNats.size).toBeGreaterThanOrEqual(apps.length);
    expect(k8sNats.size).toBeGreaterThanOrEqual(apps.length);
  });

  it.each(apps)(
    '%s: a compose service and a k8s Deployment running the same entry point',
    (app) => {
      const c = deployment(app)?.spec?.template?.spec?.containers?.[0];
      expect(c?.args, `k8s Deployment ${app}`).toEqual([`dist/apps/${app}/src/main.js`]);
      expect(compose.services[app], `compose service ${app}`).toBeDefined();
    },
  );

  it.each(apps)('%s: k8s sets every variable the native runner sets', (app) => {
    const c = deployment(app)!.spec!.template!.spec!.containers![0];
    const k8sVars = new Set([
      ...Object.keys(configMap.data ?? {}),
      ...(c.env ?? []).map((e) => e.name),
    ]);
    for (const s of native.filter((n) => n.app === app))
      for (const v of [
        ...Object.keys(s.env),
        'NATS_URL',
        ...((REDIS_KINDS as readonly string[]).includes(app) ? ['REDIS_URL'] : []),
      ])
        if (!NOT_DEPLOYED.has(v)) expect(k8sVars.has(v), `${app} lacks ${v} in k8s`).toBe(true);
  });

  it.each(apps)('%s: the same NATS user and permissions in compose and in k8s', (app) => {
    const cUser = userOf(compose.services[app].environment?.NATS_URL);
    const kEnv = deployment(app)!.spec!.template!.spec!.containers![0].env ?? [];
    const kUser = userOf(kEnv.find((e) => e.name === 'NATS_URL')?.value);
    expect(cUser, `${app}: compose NATS user`).toBe(app);
    expect(kUser, `${app}: k8s NATS user`).toBe(app);
    const inCompose = composeNats.get(app);
    const inK8s = k8sNats.get(app);
    expect(inCompose, `deploy/nats/nats.conf has no user ${app}`).toBeDefined();
    expect(inK8s, `the k8s nats-config has no user ${app}`).toBeDefined();
    expect(inK8s!.perms, app).toBe(inCompose!.perms);
    // the password variable is given to each NATS server, and k8s reads the same secret key
    expect(Object.keys(compose.services.nats.environment ?? {})).toContain(inCompose!.password);
    expect(natsSecretKeys).toContain(inK8s!.password);
    const key = kEnv.find((e) => e.name === 'NATS_PASSWORD')?.valueFrom?.secretKeyRef?.key;
    expect(key, app).toBe(inK8s!.password);
  });
});
