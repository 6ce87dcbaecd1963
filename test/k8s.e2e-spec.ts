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
import { repoRoot } from '@mmlab/runner';

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

interface Obj {
  apiVersion: string;
  kind: string;
  metadata: { name: string };
  spec?: {
    template?: { spec?: { containers?: Array<{ readinessProbe?: unknown; args?: string[] }> } };
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

  it('has the tiers the issue asks for: a 3-node NATS, a Redis Cluster, mm/cpu/hca Deployments ready by /health, the observer behind a Service', () => {
    const find = (kind: string, name: string) =>
      objects.find((o) => o.kind === kind && o.metadata.name === name);
    expect(
      (find('StatefulSet', 'nats') as unknown as { spec: { replicas: number } }).spec.replicas,
    ).toBe(3);
    expect(find('StatefulSet', 'redis-cluster')).toBeDefined();
    for (const d of ['mm', 'cpu', 'hca']) {
      const c = find('Deployment', d)?.spec?.template?.spec?.containers?.[0];
      expect(c?.args, d).toEqual([`dist/apps/${d}/src/main.js`]);
      expect(c?.readinessProbe, d).toMatchObject({ httpGet: { path: '/health' } });
    }
    expect(find('Service', 'observer')).toBeDefined();
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
