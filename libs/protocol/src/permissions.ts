/**
 * Who may do what on NATS: one identity (a NATS user) per service instance, and the subjects
 * each may publish and subscribe to — declared once, here, next to the subjects (rpc.ts,
 * trace.ts). The native runner (libs/runner nats-identities.ts) generates a user per instance
 * with a random password from this table; deploy/nats/nats.conf (compose, k8s) is rendered from
 * it too (`renderNatsAuthorization`), and test/nats-identity checks both.
 *
 * The rules, per kind of identity (I: the instance, its own subjects only):
 *
 *   mm        the kernel. Takes every mmlab.mm.> request (queue group mm), sends TLB
 *             shootdowns and notifier callbacks, another replica's drain_pages; publishes
 *             its own trace subject; may answer any inbox (a replica finishing a dead one's
 *             operation answers that operation's caller: orphan_ranges.ts).
 *   cpu       its own mmlab.cpu.<id>.> requests in, mmlab.mm.fault out.
 *   hca, kvm, dev  (notifier subscribers; dev: a bring-your-own device, libs/subscriber Device) their own mmlab.<kind>.<I>.> and mmlab.sub.<I>.> in
 *             (so nobody else receives, let alone acks, their callbacks); out only
 *             mmlab.mm.by.<I>.> — gup, unpin and (un)registration as themselves — and their
 *             trace subject.
 *   observer  every trace subject in; its own trace subject and trace_replay out.
 *   lab-api   (compose's `mmlab api`) callback faults, ping, meminfo and its chaos trace events.
 *   lab       the lab's owner (`mmlab run`, the tests, a user's tools): everything. Whoever
 *             holds the lab's credentials owns the lab, as root owns a machine.
 *
 * Every identity but the lab reads replies only on its own inbox prefix (_INBOX.<user>.>, the
 * nats.js inboxPrefix libs/runtime nats.ts sets), and answers a request only through
 * allow_responses (one reply, to a request it received): nobody can read or forge another's
 * replies. Every identity subscribes to mmlab.ctl.> (ping, config, flush, trace_replay).
 */
import { RPC, subjectFor } from './rpc';
import { TRACE_REPLAY_SUBJECT, TRACE_WILDCARD, traceSubject } from './trace';

export type IdentityKind = 'mm' | 'cpu' | 'hca' | 'kvm' | 'dev' | 'observer' | 'lab-api' | 'lab';

export interface NatsIdentity {
  /** the NATS user */
  user: string;
  kind: IdentityKind;
  /**
   * its service instance (the trace subject's last token); '*' for a user that several
   * interchangeable replicas share (compose's mm and cpu replicas)
   */
  instance: string;
  /** the {id} of its own subjects (a CPU's number, a subscriber's name); default instance */
  id?: string;
}

export interface NatsPermissions {
  publish: string[];
  subscribe: string[];
  /**
   * May answer requests it received (true: one reply each; max: that many — a subscriber's
   * injected dup-ack fault sends every ack twice, callback-faults.ts)
   */
  allowResponses: boolean | { max: number };
}

/** Replies a subscriber may send to one callback: its ack, and the copy of a dup-ack fault. */
const SUBSCRIBER_REPLIES = 2;

/** The inbox prefix of a user: replies to its requests arrive below it. */
export const inboxPrefix = (user: string): string => `_INBOX.${user}`;

/** The notifier callbacks mm sends (the mmlab.sub.{id}.* subjects but chaos). */
const CALLBACKS = [
  RPC.mnInvalidateRangeStart,
  RPC.mnInvalidateRangeEnd,
  RPC.mnInvalidatePage,
  RPC.mnChangePte,
  RPC.mnClearFlushYoung,
  RPC.mnTestYoung,
  RPC.mnRelease,
].map((d) => subjectFor(d, '*'));

/** Every subject an actor RPC is sent on as `as` (mmlab.mm.by.<as>.>). */
const actingAs = (as: string): string => `mmlab.mm.by.${as}.>`;

export function natsPermissions(who: NatsIdentity): NatsPermissions {
  const I = who.instance;
  const id = who.id ?? I;
  const own = (kind: string) => traceSubject(kind, I);
  const inbox = `${inboxPrefix(who.user)}.>`;
  const ctl = 'mmlab.ctl.>';
  switch (who.kind) {
    case 'mm':
      return {
        publish: [
          own('mm'),
          subjectFor(RPC.cpuFlushTlb, '*'),
          ...CALLBACKS,
          subjectFor(RPC.mmDrainPages, '*'),
          '_INBOX.>',
        ],
        subscribe: ['mmlab.mm.>', ctl, inbox],
        allowResponses: true,
      };
    case 'cpu':
      return {
        publish: [own('cpu'), RPC.fault.subject],
        subscribe: [`mmlab.cpu.${id}.>`, ctl, inbox],
        allowResponses: true,
      };
    case 'hca':
    case 'kvm':
    case 'dev':
      return {
        publish: [own(who.kind), actingAs(id)],
        subscribe: [`mmlab.${who.kind}.${id}.>`, `mmlab.sub.${id}.>`, ctl, inbox],
        allowResponses: { max: SUBSCRIBER_REPLIES },
      };
    case 'observer':
      return {
        publish: [own('observer'), TRACE_REPLAY_SUBJECT],
        subscribe: [TRACE_WILDCARD, 'mmlab.observer.>', ctl, inbox],
        allowResponses: true,
      };
    case 'lab-api':
      return {
        publish: [
          subjectFor(RPC.subChaos, '*'),
          RPC.ping.subject,
          RPC.meminfo.subject,
          traceSubject('lab', '>'),
        ],
        subscribe: [inbox, TRACE_REPLAY_SUBJECT],
        allowResponses: false,
      };
    case 'lab':
      return { publish: ['>'], subscribe: ['>'], allowResponses: true };
  }
}

/** A nats-server config string literal. */
const q = (s: string): string => JSON.stringify(s);
const list = (xs: readonly string[]): string => `[${xs.map(q).join(', ')}]`;

/**
 * The users of a nats-server `authorization { users = [...] }` block for these identities, one
 * line each; password(who): a literal password, or `$VAR` (nats-server reads the variable from
 * its environment: compose's and Kubernetes' secrets).
 */
export function renderNatsUsers(
  ids: readonly NatsIdentity[],
  password: (who: NatsIdentity) => string,
): string[] {
  return ids.map((who) => {
    const p = natsPermissions(who);
    const pw = password(who);
    return (
      `{ user: ${who.user}, password: ${pw.startsWith('$') ? pw : q(pw)}, permissions: { ` +
      `publish: ${list(p.publish)}, subscribe: ${list(p.subscribe)}, ` +
      `allow_responses: ${typeof p.allowResponses === 'boolean' ? p.allowResponses : `{ max: ${p.allowResponses.max} }`} } }`
    );
  });
}

/** A whole `authorization` block (the native runner's nats-server config). */
export function renderNatsAuthorization(
  ids: readonly NatsIdentity[],
  password: (who: NatsIdentity) => string,
): string {
  const users = renderNatsUsers(ids, password).map((u) => `    ${u}`);
  return ['authorization {', '  users = [', ...users, '  ]', '}', ''].join('\n');
}

/**
 * The compose and Kubernetes labs' identities (deploy/nats/nats.conf, deploy/k8s/base/nats.yaml,
 * rendered from here by gen-nats-conf.ts): the mm and CPU replicas are interchangeable and share
 * a user per kind (a CPU claims its number at start, so its user may take any CPU's subjects);
 * the one HCA (hca0), KVM (kvm0) and observer are each their own identity; lab-api and lab as
 * natively. Passwords: $NATS_<USER>_PASSWORD from the environment (secrets, never defaults).
 */
export const DEPLOYED_IDENTITIES: readonly NatsIdentity[] = [
  { user: 'mm', kind: 'mm', instance: '*' },
  { user: 'cpu', kind: 'cpu', instance: '*', id: '*' },
  { user: 'hca', kind: 'hca', instance: 'hca0' },
  { user: 'kvm', kind: 'kvm', instance: 'kvm0' },
  { user: 'observer', kind: 'observer', instance: 'observer' },
  { user: 'lab-api', kind: 'lab-api', instance: 'lab-api' },
  { user: 'lab', kind: 'lab', instance: 'lab' },
];

/** The environment variable a deployed identity's password comes from. */
export const passwordVar = (who: NatsIdentity): string =>
  `NATS_${who.user.replace(/-/g, '_').toUpperCase()}_PASSWORD`;
