/**
 * Writes docs/subscriber-protocol.md: what a notifier subscriber (a secondary MMU, written on
 * this SDK or not) must do on the wire, generated from what is enforced — the subjects and
 * schemas of libs/protocol (rpc.ts, trace.ts), the NATS permissions of kind dev
 * (permissions.ts) and the Redis ACL user dev (libs/model acl.ts). `--check` fails when the
 * file is out of date instead of writing it (scripts/test.sh).
 *
 *   node dist/libs/subscriber/src/gen-doc.js [--check] docs/subscriber-protocol.md
 */
import { z } from 'zod';
import { REDIS_ACL, aclRule } from '@mmlab/model';
import { RPC, type RpcName, TRACE_PREFIX, TraceEvent, natsPermissions } from '@mmlab/protocol';
import { docMain } from '@mmlab/protocol/doc-file';
import { NOTIFIER_CALLBACK_RPCS } from './notifier.controller';
import { json, rpcSection as rpcSectionOf } from '@mmlab/protocol/gen-doc';
import { EnvSchema } from '@mmlab/runtime';

const rpcSection = (name: RpcName): string[] => rpcSectionOf(name, RPC[name], true);

/** The trace events a subscriber publishes, and why the checker needs each. */
const EVENTS: ReadonlyArray<[string, string]> = [
  [
    'mn.recv',
    'on receipt of every callback, in the tick it arrives (the subscriber core does it): paired-range, no-map-during-invalidate and no-sleep-under-ptlock read it',
  ],
  ['mn.done', 'when the callback is done, just before its ack'],
  [
    'mn.ptl_held',
    'the sender still held a PT lock of the range when the callback arrived (checked in Redis): no-sleep-under-ptlock',
  ],
  [
    'smap.set',
    'every translation the device installs (virtual page → pfn, gen): teardown-before-free, no-map-during-invalidate',
  ],
  ['smap.clear', 'every translation it removes: teardown-before-free'],
  [
    'access',
    'every load or store straight to a frame through a translation, with the gen it was made for and the gen and state the frame had: no-stale-access, coherent-reads',
  ],
  ['access.refused', 'an access refused because mm fenced the device (ENODEV): fenced devices'],
];

export function subscriberProtocolDoc(): string {
  const out: string[] = [];
  const lease = EnvSchema.shape.MMLAB_SUBSCRIBER_LEASE_MS.parse(undefined);
  const cbTimeout = EnvSchema.shape.MMLAB_CALLBACK_TIMEOUT_MS.parse(undefined);
  const events = TraceEvent.options.filter((o) => EVENTS.some(([k]) => k === o.shape.kind.value));
  const perms = natsPermissions({ user: '<name>', kind: 'dev', instance: '<name>' });
  out.push(
    '# The subscriber protocol: bring your own secondary MMU',
    '',
    'Generated from `libs/protocol`, `libs/model` and `libs/subscriber` by `node dist/libs/subscriber/src/gen-doc.js docs/subscriber-protocol.md`; do not edit by hand.',
    '',
    'A subscriber is a secondary MMU (a device with its own translations of a process’s memory: an RDMA HCA, KVM, a GPU) that registers on a process and takes the MMU-notifier callbacks of the 2012 kernel (v3.7) over NATS. The SDK (`libs/subscriber`: `Device`, `runDevice`; see its README) does everything below but the device’s own callbacks; this page is the contract for anyone, with or without it. Every message is JSON in the NestJS NATS envelope (`docs/protocol.md`); a malformed one is answered with `EBADMSG`.',
    '',
    '## 1. Registering on a process',
    '',
    'A subscriber registers by asking mm, as itself (the subject carries its name and only it may publish there). From the reply on it receives every callback for that pid; it unregisters the same way (mm sends `release` first). A device written on the SDK is told to attach by the lab (`mmlab.dev.<name>.attach`, section 8).',
    '',
    ...rpcSection('notifierRegister'),
    ...rpcSection('notifierUnregister'),
    '## 2. The callbacks',
    '',
    'mm sends each callback as a request on `mmlab.sub.<name>.<callback>` and waits for the ack, which echoes `inv`. `invalidate_range_start` and `invalidate_range_end` of one invalidation carry the same `inv`, start and end. In `patched` (v3.7) mode mm sends a range start before it takes the PT lock and holds no PT lock while it waits (the subscriber may sleep: that is the point); `change_pte`, `clear_flush_young` and `test_young` are sent under the PT lock and must be answered without sleeping. Rules:',
    '',
    '- **ack = no longer used.** Ack `invalidate_range_start`, `invalidate_page` and `release` only once the device no longer uses any translation of the range: zapped, its TLB flush completed, and every access through them landed. mm frees the pages right after the ack. (Acking before the flush completes is the classic bug: the checker reports `teardown-before-free` and `no-stale-access`.)',
    '- **no map inside an invalidation.** Between a start’s arrival and its end, install nothing in its range (`no-map-during-invalidate`): count invalidations in progress and re-check before installing (section 5).',
    '- **callbacks you do not implement** are not sent if you leave them out of `ops` at registration.',
    '',
    ...NOTIFIER_CALLBACK_RPCS.flatMap((n) => rpcSection(n)),
    '## 3. Resends and the duplicate rule',
    '',
    `mm resends a callback whose ack did not come within \`MMLAB_CALLBACK_TIMEOUT_MS\` (default ${cbTimeout} ms), with the same \`inv\`, for as long as the subscriber’s liveness lease lives. The subscriber must do the work of a (callback, inv) **once** and ack **every** copy: a copy of a callback in progress waits for it, a copy of one done gets its result at once, a copy of one that failed runs it again (\`libs/subscriber callback_log.ts\`). Counting a resent start twice would leave its range closed for ever. An ack may also arrive twice (NATS permits each subscriber two replies per request); mm takes the first.`,
    '',
    '## 4. The liveness lease, and fencing (ENODEV)',
    '',
    `mm tells a slow subscriber from a dead one by a lease separate from the callbacks: the Redis key \`{sub}:live:<name>\` (PX \`MMLAB_SUBSCRIBER_LEASE_MS\`, default ${lease} ms), renewed every third of its TTL on a timer of its own, never on the callback path. mm waits for a slow subscriber whose lease lives as long as it takes; one whose lease expired is unregistered everywhere and **fenced**: its name joins \`{mem}:fenced\`, and the frame-access script refuses its loads and stores from then on (\`FENCED\`). The subscriber must then report \`access.refused\` and fail the access with \`ENODEV\` (typed error, nothing changed). Only a new incarnation lifts the fence: at start, take the lease first, then remove your name from \`{mem}:fenced\`.`,
    '',
    '## 5. Faulting pages in (gup with read_begin / read_retry)',
    '',
    'A device that misses in its translations faults the page in through mm, as itself, without pinning (`pin: false`), and installs the page only if no invalidation reached it meanwhile:',
    '',
    '```',
    '  fault                                    invalidation (mm → device)',
    '  seq0 = seq            (read_begin)',
    '  gup(pid, addr) → pfn, gen, writable',
    '                                           recv range_start: count++ (same tick), zap, ack',
    '  if count != 0 or seq != seq0  (read_retry, in the same atomic step as the install):',
    '      count != 0: wait for the end, fault again',
    '      seq moved:  fault again at once',
    '  else install addr → (pfn, gen)           recv range_end: seq++, count-- (wake at 0)',
    '```',
    '',
    'Then the access goes straight to the frame (Redis script `frameAccess`, refused when fenced), remembering the frame’s `gen` from the fault: an access whose `gen` is stale is a use-after-free and is reported (`access` with `frameGen`/`frameFree`), and still lands, as real hardware does. Models: KVM’s `mmu_notifier_seq`/`mmu_notifier_count` and `mmu_notifier_retry()` (v3.7), today’s `mmu_interval_read_begin()`/`read_retry()`.',
    '',
    ...rpcSection('gup'),
    '## 6. Trace events a subscriber must publish',
    '',
    `Published on \`${TRACE_PREFIX}.<service>.<name>\` (service \`dev\` for a brought device) in trace batches (\`docs/protocol.md\`, "Trace batch"). The checker judges a subscriber only from these: one it cannot see it cannot pass.`,
    '',
    '| event | when (and which invariant reads it) |',
    '|---|---|',
    ...EVENTS.map(([k, why]) => `| \`${k}\` | ${why} |`),
    '',
    'It also answers `mmlab.ctl.ping`, `mmlab.ctl.config` and `mmlab.ctl.flush` (publish every buffered event, then reply): a run’s barrier waits for every instance that answers ping.',
    '',
    '```json',
    json(z.discriminatedUnion('kind', events as never)),
    '```',
    '',
    '## 7. Credentials',
    '',
    '`mmlab up --byo <name>` (and `./scripts/lab.sh --byo <name>`) makes a NATS user `<name>` of kind `dev` with a fresh password and gives it the Redis user `dev`, and writes both, with the environment the lab’s services run with, to `<runtime dir>/dev-<name>.json` (mode 0600; runtime dir: `MMLAB_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/mmlab`, else `<tmpdir>/mmlab-<uid>`). `runDevice` reads it with `--creds FILE` (or `MMLAB_DEV_CREDS`).',
    '',
    'NATS permissions of a `dev` identity (`libs/protocol permissions.ts`):',
    '',
    `- publish: ${perms.publish.map((p) => `\`${p}\``).join(', ')}`,
    `- subscribe: ${perms.subscribe.map((p) => `\`${p}\``).join(', ')}`,
    `- replies: ${typeof perms.allowResponses === 'boolean' ? String(perms.allowResponses) : `at most ${perms.allowResponses.max} per request received`}`,
    '',
    `Redis user \`dev\` (\`libs/model acl.ts\`): ${REDIS_ACL.dev.doc}`,
    '',
    '```',
    `user dev on #<sha256> ${aclRule('dev', ['<name>'])}`,
    '```',
    '',
    '## 8. The device RPCs (a device written on the SDK)',
    '',
    'What the lab (scenario steps `dev.attach`, `dev.read`, `dev.write`, `dev.detach`; `mmlab conform`) asks of a device on `mmlab.dev.<name>.*`.',
    '',
    ...rpcSection('devAttach'),
    ...rpcSection('devAccess'),
    ...rpcSection('devDetach'),
  );
  return out.join('\n');
}

if (require.main === module)
  docMain(
    process.argv.slice(2),
    'docs/subscriber-protocol.md',
    subscriberProtocolDoc,
    'npm run subscriber:doc',
  );
