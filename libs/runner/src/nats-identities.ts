/**
 * A native lab's NATS identities: one user per service instance (and `lab`, its owner), each
 * with a random password made at start and the permissions libs/protocol declares for its kind
 * (permissions.ts). Nothing is written to the repository; the nats-server's config lives in a
 * private temporary folder for the lab's life (servers.ts startNats).
 */
import { randomBytes } from 'node:crypto';
import { type NatsIdentity, renderNatsAuthorization } from '@mmlab/protocol';
import type { ServiceSpec } from './local-lab';

/** The lab owner's NATS user: `mmlab run`, the tests and a user's tools connect as it. */
export const LAB_USER = 'lab';

/** The identity of one service instance: a user named after the instance. */
export function identityOf(s: ServiceSpec): NatsIdentity {
  return {
    user: s.instance,
    kind: s.app,
    instance: s.instance,
    // a CPU's own subjects are numbered (mmlab.cpu.<id>.>); everyone else's named
    ...(s.app === 'cpu' && s.env.MMLAB_CPU_ID !== undefined ? { id: s.env.MMLAB_CPU_ID } : {}),
  };
}

export interface LabIdentities {
  /** the nats-server `authorization` block */
  authorization: string;
  /** "user:password" per service instance, and for LAB_USER */
  creds: Record<string, string>;
}

/**
 * Users and fresh passwords for every instance of specs, every external device (kind dev: a
 * device the user runs, libs/subscriber runDevice), and the lab's own.
 */
export function labIdentities(
  specs: readonly ServiceSpec[],
  devices: readonly string[] = [],
): LabIdentities {
  const ids: NatsIdentity[] = [
    ...specs.map(identityOf),
    ...devices.map((d): NatsIdentity => ({ user: d, kind: 'dev', instance: d })),
    { user: LAB_USER, kind: 'lab', instance: LAB_USER },
  ];
  const passwords = new Map(ids.map((i) => [i.user, randomBytes(18).toString('base64url')]));
  return {
    authorization: renderNatsAuthorization(ids, (i) => passwords.get(i.user)!),
    creds: Object.fromEntries(ids.map((i) => [i.user, `${i.user}:${passwords.get(i.user)!}`])),
  };
}
