/**
 * mm replicas ({mm}, keys.ts): the index of the address spaces each mm incarnation may own open
 * range invalidations or intents on, which the orphan-range reaper reads instead of every
 * process (apps/mm/src/kernel/orphan_ranges.ts). Each call names keys of the {mm} slot only;
 * the records indexed are in {p:<pid>}, another slot: never written in the same script.
 */
import { Bit, Int, Str, Strs, oneOf, script, tagged } from '../boundary';

export const REPLICA_SCRIPTS = {
  invIndex: script({
    doc: `Index pid as one on which incarnation may own open invalidations or intents, or have installed frames of its per-replica batch, before its first invOpen, intentOpen, invClaim, intentClaim or batch install there (Store calls it once per incarnation and pid). An incarnation the reaper found dead ({mm}:dead) indexes nothing: its index was read as final. KEYS invowners invpids dead; ARGV incarnation pid → {'OK', 1 (added) | 0 (indexed already)} | {'DEAD'}`,
    models:
      'none: lab crash recovery: the address spaces an mm incarnation owes invalidate_range_end (or an operation) on',
    keys: ['invowners', 'invpids', 'dead'],
    args: { incarnation: Str, pid: Int },
    reply: oneOf(tagged('OK', { added: Bit }), tagged('DEAD')),
    lua: `
if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then return {'DEAD'} end
redis.call('SADD', KEYS[1], ARGV[1])
return {'OK', redis.call('SADD', KEYS[2], ARGV[2])}
`,
  }),
  mmMarkDead: script({
    doc: `An mm incarnation the reaper found dead: mark it ({mm}:dead: invIndex refuses it from now on) and read its index in the same step, so that the pids read are all it may ever have installed a frame of its batch in (or own anything on). KEYS dead invpids; ARGV incarnation → {pid, ...}`,
    models: 'none: lab crash recovery: a dead mm incarnation (its index made final)',
    keys: ['dead', 'invpids'],
    args: { incarnation: Str },
    reply: Strs.describe('{pid, ...}'),
    lua: `
redis.call('SADD', KEYS[1], ARGV[1])
return redis.call('SMEMBERS', KEYS[2])
`,
  }),
  invUnindex: script({
    doc: `Drop pid from a dead incarnation's index once it is fenced off pid and owns nothing there (the reaper checked), unless its liveness lease is back (it was stopped, not dead: its index stays whole); the incarnation leaves invowners with its last pid. KEYS invowners invpids live; ARGV incarnation pid → {'OK', pids left} | {'ALIVE'}`,
    models: 'none: lab crash recovery: a dead mm incarnation owes nothing on this address space',
    keys: ['invowners', 'invpids', 'live'],
    args: { incarnation: Str, pid: Int },
    reply: oneOf(tagged('OK', { left: Int }), tagged('ALIVE')),
    lua: `
if redis.call('EXISTS', KEYS[3]) == 1 then return {'ALIVE'} end
redis.call('SREM', KEYS[2], ARGV[2])
local left = redis.call('SCARD', KEYS[2])
if left == 0 then redis.call('SREM', KEYS[1], ARGV[1]) end
return {'OK', left}
`,
  }),
} as const;
