/**
 * Writes docs/protocol.md from the schemas (the Maelstrom doc.clj idea: the published protocol
 * is generated from what is enforced, so it cannot drift). `--check` fails when the file is
 * out of date instead of writing it.
 *
 *   node dist/libs/protocol/src/gen-doc.js [--check] docs/protocol.md
 */
import { z } from 'zod';
import { docMain } from './doc-file';
import { ERRORS } from './errors';
import { ALL_RPCS, type RpcDef } from './rpc';
import { TRACE_BATCH_MAX, TRACE_PREFIX, TraceBatchEnvelope, TraceEvent } from './trace';

/** A schema as the docs print it: its JSON Schema (what a message must look like on the wire). */
export const json = (s: z.ZodType): string =>
  JSON.stringify(z.toJSONSchema(s, { io: 'input', unrepresentable: 'any' }), null, 2);

/** One subject's section: its doc (and what it models), request and reply schemas. */
export const rpcSection = (name: string, d: RpcDef, models = false): string[] => [
  `### \`${d.subject}\` (${name})`,
  '',
  models ? `${d.doc} Models: ${d.models}.` : d.doc,
  '',
  'Request:',
  '```json',
  json(d.request),
  '```',
  'Reply:',
  '```json',
  json(d.response),
  '```',
  '',
];

export function protocolDoc(): string {
  const out: string[] = [];
  out.push('# mmlab wire protocol', '');
  out.push('Generated from `libs/protocol` by `npm run protocol:doc`; do not edit by hand.', '');
  out.push(
    'Requests and replies travel in the envelope of NestJS\'s NATS transport: a request is `{"id", "pattern": <subject>, "data": <request>}`, a reply `{"id", "response": <reply>}` or `{"id", "err": {"code", "message", "definite"}}`. Every service validates what it receives against the schema below and answers a bad message with `EBADMSG`.',
    '',
  );
  out.push('## Subjects', '', '| subject | models | delivery | what |', '|---|---|---|---|');
  for (const [, d] of ALL_RPCS)
    out.push(
      `| \`${d.subject}\` | ${d.models} | ${d.queue ? `queue group \`${d.queue}\`` : d.broadcast ? 'every instance' : 'one instance'} | ${d.doc} |`,
    );
  out.push(
    '',
    `Trace events are published (no reply) on \`${TRACE_PREFIX}.<service>.<instance>\`, in batches of up to ${TRACE_BATCH_MAX} (one per millisecond at most; \`first\`..\`last\` is the seq range of the batch's events, see "Trace batch" below).`,
    '',
  );
  out.push('## Errors', '', '| code | definite | meaning |', '|---|---|---|');
  for (const [code, e] of Object.entries(ERRORS))
    out.push(`| \`${code}\` | ${e.definite} | ${e.doc} |`);
  out.push('', '## Messages', '');
  for (const [name, d] of ALL_RPCS) out.push(...rpcSection(name, d));
  out.push(
    '## Trace batch',
    '',
    'Each of `events` is a trace event (next section).',
    '',
    '```json',
    json(TraceBatchEnvelope),
    '```',
    '',
  );
  out.push('## Trace events', '', '```json', json(TraceEvent), '```', '');
  return out.join('\n');
}

if (require.main === module)
  docMain(process.argv.slice(2), 'docs/protocol.md', protocolDoc, 'npm run protocol:doc');
