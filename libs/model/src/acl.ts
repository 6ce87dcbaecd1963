/**
 * Who may do what in the lab's Redis: one ACL user per service kind (Redis 7 ACLs, selectors),
 * declared here next to the key layout it protects (keys.ts) and the scripts (scripts.ts), and
 * turned into ACL rules by aclUserRule (the native runner's aclfile, deploy/redis/users.acl for
 * compose and k8s; docs/redis.md lists them). Nothing else in the repository writes a rule.
 *
 * How Redis checks a kind (7.0):
 *   - a plain command: the command must be the kind's and every key it names must match one of
 *     the kind's patterns with the access the command needs (%R~: reads only; ~: both);
 *   - EVALSHA / EVAL: Redis assumes a script reads and writes every key given in KEYS, so the
 *     call itself is allowed by a selector of its own, `(+evalsha +eval ~<script keys>)`, that
 *     grants nothing else; every redis.call inside the script is then checked again, command and
 *     key, against the kind's root permissions. A script that reads a key the kind may only read
 *     passes; a redis.call that writes it is refused (NOPERM), whatever Lua the kind sends.
 *   - the default user is off: a connection without a user name and password can do nothing
 *     (DEFAULT_USER_RULE says why it keeps the right to write, which nobody can use).
 *
 * Invariants (acl.spec.ts): every command a kind's scripts name (their Lua, helpers included) is
 * one of its commands; every redis.call names its command as a literal (so that list is
 * complete); no kind but `lab` has an admin, dangerous or keyspace-wide command (FLUSHALL,
 * CONFIG, KEYS, SCAN, MONITOR, ACL, DEBUG, SHUTDOWN ...) or the pattern `~*` with write access.
 */
import { SCRIPTS, type ScriptName } from './scripts';

/** The Redis users of a lab: one per service kind that uses Redis, plus fsck and the operator. */
export const REDIS_KINDS = ['mm', 'cpu', 'hca', 'kvm', 'dev', 'fsck', 'lab'] as const;
export type RedisKind = (typeof REDIS_KINDS)[number];
/**
 * The kinds of a compose or k8s lab (deploy/redis/users.acl): all but `dev`, the bring-your-own
 * devices (libs/subscriber Device), which only a native lab makes users for (`mmlab up --byo`).
 */
export const DEPLOYED_REDIS_KINDS = REDIS_KINDS.filter((k) => k !== 'dev');

/**
 * Commands every client sends whatever it does: PING (/health), INFO (ioredis's ready check: it
 * waits while Redis loads its AOF), CLIENT SETNAME (mm's connection name), QUIT, and what
 * ioredis's Cluster client sends to each node (CLUSTER SLOTS / INFO, READWRITE, READONLY,
 * ASKING). AUTH and HELLO are allowed to everyone by Redis itself. None names a key.
 */
export const CONNECTION_COMMANDS = [
  'ping',
  'info',
  'client|setname',
  'quit',
  'cluster|slots',
  'cluster|info',
  'readwrite',
  'readonly',
  'asking',
] as const;

/**
 * A kind's rights. Key patterns use Redis's glob; `<instance>` stands for each instance of the
 * kind (the native runner knows them; compose and k8s give `<kind>*`: cpu0, cpu1, ...).
 */
export interface RedisAclDecl {
  /** what the user is for (docs/redis.md) */
  readonly doc: string;
  /** the scripts it calls (EVALSHA, EVAL after a NOSCRIPT): their Lua's commands are added */
  readonly scripts: readonly ScriptName[] | 'all';
  /** the commands it sends outside scripts (lower case; a subcommand as `client|setname`) */
  readonly commands: readonly string[];
  /** key patterns it only reads (%R~) */
  readonly read: readonly string[];
  /** key patterns it reads and writes (~) */
  readonly write: readonly string[];
  /**
   * key patterns its scripts receive in KEYS (the EVALSHA selector; Redis checks KEYS as if
   * written); what the scripts then do with each key is checked against read and write
   */
  readonly scriptKeys: readonly string[];
}

/** The subscriber side of the Store (libs/subscriber SubscriberStore): HCA and KVM alike. */
const subscriber = (kind: string): RedisAclDecl => ({
  doc: `${kind} (a notifier subscriber): its device's loads and stores through its translation table (frameAccess, refused when fenced), the check that a callback's sender holds no PT lock (ptlHeldBy, reads only), its liveness lease and lifting its own fence. No page table, VMA, lock or intent can it write.`,
  scripts: ['frameAccess', 'ptlHeldBy'],
  commands: ['set', 'del', 'exists', 'srem', 'sismember'],
  read: ['{mem}:meta', '{p:*}:ptl:*'],
  write: ['{mem}:frames', '{mem}:fenced', '{sub}:live:<instance>'],
  scriptKeys: ['{mem}:*', '{p:*}:ptl:*'],
});

/**
 * The declaration. mm is the kernel: it reads and writes every room, but only with the commands
 * the model uses (no FLUSHALL, CONFIG, KEYS ...).
 */
export const REDIS_ACL: Readonly<Record<RedisKind, RedisAclDecl>> = {
  mm: {
    doc: 'mm (the kernel): every script, and the plain reads and writes of the Store (libs/model), on the rooms of the key layout: {mem}, {p:<pid>}, {sub}, {mm} and {g}.',
    scripts: 'all',
    commands: [
      'get',
      'set',
      'del',
      'exists',
      'incr',
      'pexpire',
      'mget',
      'getrange',
      'bitfield',
      'hget',
      'hmget',
      'hset',
      'hdel',
      'hkeys',
      'hgetall',
      'sadd',
      'srem',
      'sismember',
      'smembers',
      'zrange',
      'zrevrangebyscore',
      'time',
      'multi',
      'exec',
      'discard',
    ],
    read: [],
    write: ['{mem}:*', '{p:*}:*', '{sub}:*', '{mm}:*', '{g}:*'],
    scriptKeys: ['{mem}:*', '{p:*}:*', '{sub}:*', '{mm}:*', '{g}:*'],
  },
  cpu: {
    doc: 'cpu (a CPU agent): the hardware page walker (walk: reads a PTE or a huge PMD, sets its accessed bit, joins mm_cpumask), loads and stores through its TLB (frameAccess), its CPU id, its liveness lease and lifting its own fence. No VMA, lock, intent or frame counts.',
    scripts: ['walk', 'frameAccess'],
    commands: ['set', 'del', 'exists', 'incr', 'srem', 'sismember'],
    read: ['{mem}:meta', '{p:*}:pmdhuge'],
    write: [
      '{p:*}:pte',
      '{p:*}:cpumask',
      '{mem}:frames',
      '{mem}:fenced',
      '{sub}:live:<instance>',
      '{g}:nextcpu',
    ],
    scriptKeys: ['{mem}:*', '{p:*}:pte', '{p:*}:cpumask', '{p:*}:pmdhuge'],
  },
  hca: subscriber('hca'),
  kvm: subscriber('kvm'),
  dev: subscriber('dev'),
  fsck: {
    doc: "`mmlab fsck` and the tests' fsck: reads every key, writes none (its scripts, pteDump, heldLocks and semReaders, only read).",
    scripts: ['pteDump', 'heldLocks', 'semReaders'],
    commands: [
      'get',
      'mget',
      'exists',
      'getrange',
      'hget',
      'hmget',
      'hkeys',
      'hgetall',
      'smembers',
      'sismember',
      'zrange',
      'time',
      'multi',
      'exec',
      'discard',
    ],
    read: ['*'],
    write: [],
    scriptKeys: ['*'],
  },
  lab: {
    doc: 'the lab operator (the native runner, the test harness, redis-cli in compose and k8s): everything, as an administrator. Never given to a service.',
    scripts: 'all',
    commands: ['@all'],
    read: [],
    write: ['*'],
    scriptKeys: ['*'],
  },
};

/** The Redis commands a Lua text names (redis.call / redis.pcall), lower case, sorted. */
export function luaCommands(lua: string): string[] {
  const out = new Set<string>();
  for (const m of lua.matchAll(/redis\.p?call\(\s*'([A-Za-z_]+)'/g)) out.add(m[1].toLowerCase());
  return [...out].sort();
}

/** Every command a kind may send: its own, its scripts', EVALSHA and EVAL, the connection's. */
export function aclCommands(kind: RedisKind): string[] {
  const d = REDIS_ACL[kind];
  if (d.commands.includes('@all')) return ['@all'];
  const scripts = d.scripts === 'all' ? (Object.keys(SCRIPTS) as ScriptName[]) : d.scripts;
  const out = new Set<string>([...CONNECTION_COMMANDS, ...d.commands]);
  for (const s of scripts) for (const c of luaCommands(SCRIPTS[s].lua)) out.add(c);
  return [...out].sort();
}

/** A glob pattern matching exactly s (Redis's stringmatch: * ? [ ] and \ are special). */
const globLiteral = (s: string): string => s.replace(/[*?[\]\\]/g, (c) => `\\${c}`);

/** The patterns with `<instance>` expanded: one per instance, or `<kind>*` when none are known. */
function expand(
  patterns: readonly string[],
  kind: RedisKind,
  instances?: readonly string[],
): string[] {
  return patterns.flatMap((p) =>
    p.includes('<instance>')
      ? instances
        ? instances.map((i) => p.replace('<instance>', globLiteral(i)))
        : [p.replace('<instance>', `${kind}*`)]
      : [p],
  );
}

/**
 * The ACL rule of kind (what follows `ACL SETUSER <kind>` or `user <kind>` in an aclfile), without
 * its password. instances: the kind's instance names, for `<instance>` patterns.
 */
export function aclRule(kind: RedisKind, instances?: readonly string[]): string {
  const d = REDIS_ACL[kind];
  const cmds = aclCommands(kind)
    .map((c) => `+${c}`)
    .join(' ');
  const read = expand(d.read, kind, instances).map((p) => `%R~${p}`);
  const write = expand(d.write, kind, instances).map((p) => `~${p}`);
  const root = ['resetkeys', 'resetchannels', '-@all', cmds, ...read, ...write];
  if (kind === 'lab') return ['resetkeys', 'resetchannels', '~*', '&*', '+@all'].join(' ');
  const scriptKeys = expand(d.scriptKeys, kind, instances).map((p) => `~${p}`);
  return [...root, `(+evalsha +eval ${scriptKeys.join(' ')})`].join(' ');
}

/**
 * The default user of every lab with ACLs: off, so that nobody can be it (a connection without
 * a user name and password is refused every command: NOAUTH; AUTH default ... is refused too).
 * It keeps the right to write, only because redis-server replays the append-only file as the
 * default user and re-checks each MULTI/EXEC block's commands against it (redis/redis#14541,
 * fixed after 7.0.15; valkey#3983): a script's effects are such a block, and with no rights a
 * restarted Redis would silently drop every one (test/server-chaos.e2e-spec.ts (a) lost writes).
 */
export const DEFAULT_USER_RULE = 'off resetkeys resetchannels -@all +multi +exec +@write ~*';

/**
 * An aclfile (redis-server --aclfile) for these kinds: `user <kind> on #<sha256 of password>
 * <rule>` per kind, and the default user off. Passwords are stored hashed.
 */
export function aclFile(
  users: Partial<Record<RedisKind, { passwordSha256: string; instances?: readonly string[] }>>,
): string {
  const lines = [`user default ${DEFAULT_USER_RULE}`];
  for (const k of REDIS_KINDS) {
    const u = users[k];
    if (u) lines.push(`user ${k} on #${u.passwordSha256} ${aclRule(k, u.instances)}`);
  }
  return `${lines.join('\n')}\n`;
}

/** The environment variable holding a kind's password in compose and k8s: REDIS_MM_PASSWORD ... */
export const redisPasswordVar = (kind: RedisKind): string => `REDIS_${kind.toUpperCase()}_PASSWORD`;

/**
 * deploy/redis/users.acl: every user with `#${REDIS_<KIND>_PASSWORD}` where its password's
 * SHA-256 goes (deploy/redis/start.sh puts it in at the server's start), and `<kind>*` for the
 * keys of one instance. Generated (gen-acl.ts), never edited by hand.
 */
export function aclTemplate(): string {
  const lines = [
    "# The lab's Redis users (compose and k8s). Generated from libs/model/src/acl.ts by",
    '# `npm run redis:acl`; do not edit. deploy/redis/start.sh replaces each #${VARIABLE} by the',
    "# SHA-256 of that environment variable's value and starts redis-server with the result.",
    `user default ${DEFAULT_USER_RULE}`,
    ...DEPLOYED_REDIS_KINDS.map((k) => `user ${k} on #\${${redisPasswordVar(k)}} ${aclRule(k)}`),
  ];
  return `${lines.join('\n')}\n`;
}

/** docs/redis.md's section on the users (gen-doc.ts). */
export function aclDoc(): string[] {
  const out = [
    '## ACL users',
    '',
    "Generated from `libs/model/src/acl.ts`. One Redis user per kind: the native runner makes a random password per kind at every start (an aclfile in the server's folder, mode 0600, passwords hashed); compose and k8s take them from `REDIS_<KIND>_PASSWORD` (`scripts/secrets.sh` writes `.env` and the k8s Secret's env file) into `deploy/redis/users.acl`. The `default` user is off. Every kind may also send " +
      CONNECTION_COMMANDS.map((c) => `\`${c}\``).join(', ') +
      " (no key). A script call is allowed by a selector `(+evalsha +eval ~<script keys>)` granting nothing else; what the script then does is checked against the kind's own commands and keys (`%R~`: read only). `<instance>`: each instance of the kind (natively its names; compose and k8s `<kind>*`). The observer uses no Redis and has no user.",
    '',
    '| user | for | scripts | commands outside scripts | reads | reads and writes | script KEYS |',
    '|---|---|---|---|---|---|---|',
  ];
  const list = (a: readonly string[]) => a.map((x) => `\`${x}\``).join(' ') || '—';
  for (const k of REDIS_KINDS) {
    const d = REDIS_ACL[k];
    out.push(
      `| \`${k}\` | ${d.doc.replace(/\|/g, '\\|')} | ${d.scripts === 'all' ? 'all' : list(d.scripts)} | ${list(d.commands)} | ${list(d.read)} | ${list(d.write)} | ${list(d.scriptKeys)} |`,
    );
  }
  out.push('');
  return out;
}
