/**
 * KSM (mm/ksm.c v3.7): the scripts of ksmd's merge — the page's counts and stable-tree lookup
 * ({mem}), making a page a KSM page ({mem}), and the PTE steps of write_protect_page and
 * replace_page under a held PT lock ({p:<pid>}). Keys in keys.ts ({mem}:ksm); helpers in
 * ksm/lua.ts. Spread into SCRIPTS (scripts.ts).
 */
import { z } from 'zod';
import { Int, LeaseValue, Str, Strs, oneOf, script, tagged } from '../boundary';
import { MEM_ROLES } from '../keys';
import { LUA_HELPERS } from '../lua';
import { MEM_LUA } from '../mem/lua';
import { PTE_FIELD_MAX, PTE_LUA } from '../mm/lua';

const PteField = Int.min(0).max(PTE_FIELD_MAX);

export const KSM_SCRIPTS = {
  ksmReplaceGet: script({
    doc: `replace_page()'s get_page(kpage) for the PTE of pid at vpn that maps page, recorded in the same step as u:<rec> of {mem}:pending ("0|owner|replace|pid|vpn|kpfn:kgen|pfn:gen"): until ksmReplaceEnd, one of the two mappings is owed a put — kpage's if the PTE never came to map it, page's if it did — by the owner, or by a reaper if the owner dies (orphan_ranges.ts). kpage not a live frame of kgen: STALE, nothing done. → {'OK'} | {'STALE'}`,
    models:
      'get_page(kpage) + page_add_anon_rmap in replace_page(), mm/ksm.c v3.7 (recorded for crash recovery)',
    keys: MEM_ROLES,
    args: {
      rec: Str,
      owner: Str,
      pid: Int,
      vpn: Int,
      kpfn: Int,
      kgen: Int,
      pfn: Int,
      gen: Int,
    },
    reply: oneOf(tagged('OK'), tagged('STALE')),
    lua:
      LUA_HELPERS +
      MEM_LUA +
      `
if not frame_live(KEYS, ARGV[5], ARGV[6]) then return {'STALE'} end
frame_add(KEYS, ARGV[5], 'ref', 1, 'map', 1)
redis.call('HSET', KEYS[5], 'u:' .. ARGV[1], '0|' .. ARGV[2] .. '|replace|' .. ARGV[3] .. '|' ..
  ARGV[4] .. '|' .. ARGV[5] .. ':' .. ARGV[6] .. '|' .. ARGV[7] .. ':' .. ARGV[8])
return {'OK'}
`,
  }),
  ksmReplaceEnd: script({
    doc: `The end of replace_page()'s record u:<ARGV[1]> (ksmReplaceGet), if it is still owner ARGV[2]'s: ARGV[3] = 1, the PTE maps kpage (set_pte_at_notify done) — page_remove_rmap + put_page(page); 0, it never came to — kpage's mapping goes back. Run by the owner, or by a reaper once the owner is dead and fenced off pid (it read the PTE). → {'OK', freed} | {'GONE'} (ended already)`,
    models:
      'page_remove_rmap(page) + put_page(page) in replace_page(), mm/ksm.c v3.7 (or its undo)',
    keys: MEM_ROLES,
    args: { rec: Str, owner: Str, installed: z.union([z.literal(0), z.literal(1)]) },
    reply: oneOf(tagged('OK', { freed: z.array(Int) }), tagged('GONE')),
    lua:
      LUA_HELPERS +
      MEM_LUA +
      `
local field = 'u:' .. ARGV[1]
local t = redis.call('HGET', KEYS[5], field)
if not t or string.sub(t, 1, #ARGV[2] + 11) ~= '0|' .. ARGV[2] .. '|replace|' then return {'GONE'} end
local kp, kg, p, g = string.match(t, '|(%d+):(%d+)|(%d+):(%d+)$')
redis.call('HDEL', KEYS[5], field)
local put = {{kp, kg}}
if ARGV[3] == '1' then put = {{p, g}} end
return {'OK', (put_frames(KEYS, 'map', put))}
`,
  }),
  ksmPageInfo: script({
    doc: `What ksmd needs to know of a page (pfn, gen): whether it is a live used frame of that gen, its mapcount and refcount, whether it is in the swap cache (one reference: write_protect_page's "swapped"), PG_ksm, whether it is anonymous (not a file's or the XIP sparse page), whether a fault or COW has it pending ({mem}:pending, a per-replica batch frame aside), its data word, and the live KSM page holding that same content (stable_tree_search; 0 0 none). Read-only. → {live, map, ref, swapped, ksm, anon, pending, data, kpfn, kgen}`,
    models:
      'page_mapcount()/page_count()/PageSwapCache()/PageKsm() and stable_tree_search(), mm/ksm.c v3.7',
    keys: MEM_ROLES,
    args: { pfn: Int, gen: Int },
    reply: z
      .tuple([Int, Int, Int, Int, Int, Int, Int, Int, Int, Int])
      .transform(([live, map, ref, swapped, ksm, anon, pending, data, kpfn, kgen]) => ({
        live: live === 1,
        map,
        ref,
        swapped: swapped === 1,
        ksm: ksm === 1,
        anon: anon === 1,
        pending: pending === 1,
        data,
        kpfn,
        kgen,
      }))
      .describe('{live, map, ref, swapped, ksm, anon, pending, data, kpfn, kgen}'),
    lua:
      LUA_HELPERS +
      MEM_LUA +
      `
if not frame_live(KEYS, ARGV[1], ARGV[2]) then return {0, 0, 0, 0, 0, 0, 0, 0, 0, 0} end
local map, ref, data = frame_get(KEYS, ARGV[1], 'map', 'ref', 'data')
local swapped = swapcache_slot(KEYS, ARGV[1]) and 1 or 0
local ksm = page_ksm(KEYS, ARGV[1]) and 1 or 0
local anon = 1
if pagecache_of(KEYS, ARGV[1]) or xip_sparse(KEYS) == tonumber(ARGV[1]) then anon = 0 end
-- a fault or COW in flight (a per-replica batch frame, "…|reserve", is an ordinary mapped page)
local tag = redis.call('HGET', KEYS[5], ARGV[1])
local pending = 0
if tag and string.sub(tag, -8) ~= '|reserve' then pending = 1 end
local kp, kg = ksm_stable_find(KEYS, int_arg(data))
return {1, map, ref, swapped, ksm, anon, pending, data, kp or 0, kg or 0}
`,
  }),
  ksmStableInsert: script({
    doc: `Make the page (pfn, gen) a KSM page: PG_ksm set and its stable-tree entries written (d<data>, p<pfn>), off the LRU lists (reclaim skips KSM pages). Refused when the frame is not that live anonymous page (STALE) or another live KSM page already holds that content (EXISTS: merge into it instead). A page that already is one answers OK. → {'OK'} | {'STALE'} | {'EXISTS', kpfn, kgen}`,
    models:
      'set_page_stable_node(page, NULL) in try_to_merge_one_page + stable_tree_insert(), mm/ksm.c v3.7',
    keys: MEM_ROLES,
    args: { pfn: Int, gen: Int },
    reply: oneOf(tagged('OK'), tagged('STALE'), tagged('EXISTS', { kpfn: Int, kgen: Int })),
    lua:
      LUA_HELPERS +
      MEM_LUA +
      `
if not frame_live(KEYS, ARGV[1], ARGV[2]) or pagecache_of(KEYS, ARGV[1])
  or xip_sparse(KEYS) == tonumber(ARGV[1]) then return {'STALE'} end
local fl, data = frame_get(KEYS, ARGV[1], 'flags', 'data')
data = int_arg(data)
local kp, kg = ksm_stable_find(KEYS, data)
if kp and kp ~= tonumber(ARGV[1]) then return {'EXISTS', kp, kg} end
if bit.band(fl, PG_KSM) == 0 then frame_set(KEYS, ARGV[1], 'flags', fl + PG_KSM) end
redis.call('HSET', KEYS[10], 'd' .. data, ARGV[1] .. ':' .. ARGV[2], 'p' .. ARGV[1], data)
redis.call('ZREM', KEYS[7], ARGV[1]); redis.call('ZREM', KEYS[8], ARGV[1])
return {'OK'}
`,
  }),
  ksmPteClear: script({
    doc: `The PT-lock half of write_protect_page (mode 'wp') and replace_page (mode 'same'), under a held PT lock lease: page_check_address — the PTE of vpn must map (pfn, gen), else GONE — then ptep_clear_flush without the flush (the caller shoots the TLBs down next, still holding the lock). 'wp': a writable PTE (pte_write || pte_dirty: mmlab's PTEs have no dirty bit) is cleared, a read-only one is left (CLEAN: nothing to write-protect, orig_pte is it). 'same': pte_same(orig_pte) — w must be ARGV[8] — and the PTE is cleared. Cleared here means w = 3 with the old page kept (keys.ts :pte): pte_none to every walker, put back read-only by a fault if this holder dies. KEYS ptl ptlmax pte cpumask; ARGV "owner|token" lockName token vpn pfn gen mode w → {'OK', w (what the PTE was), cpumask} | {'CLEAN'} | {'GONE'} | {'ESTALE'}`,
    models:
      'write_protect_page() / replace_page(), mm/ksm.c v3.7: page_check_address or pte_offset_map_lock + pte_same, ptep_clear_flush',
    keys: ['ptl', 'ptlmax', 'pte', 'cpumask'],
    args: {
      value: LeaseValue,
      lock: Str,
      token: Int,
      vpn: Int,
      pfn: PteField,
      gen: PteField,
      mode: z.enum(['wp', 'same']),
      w: Int.min(0).max(1),
    },
    reply: oneOf(
      tagged('OK', { w: Int, cpumask: Strs }),
      tagged('CLEAN'),
      tagged('GONE'),
      tagged('ESTALE'),
    ),
    lua:
      LUA_HELPERS +
      PTE_LUA +
      `
if not fenced(KEYS[1], KEYS[2], ARGV[2], ARGV[1], tonumber(ARGV[3])) then return {'ESTALE'} end
local vpn = tonumber(ARGV[4])
local pfn, gen = tonumber(ARGV[5]), tonumber(ARGV[6])
local w = page_check_address(KEYS[3], vpn, pfn, gen)
if not w or w == 2 then return {'GONE'} end
if ARGV[7] == 'wp' then
  if w ~= 1 then return {'CLEAN'} end
elseif w ~= tonumber(ARGV[8]) then
  return {'GONE'}
end
pte_set(KEYS[3], vpn, pfn, gen, 3)
return {'OK', w, redis.call('SMEMBERS', KEYS[4])}
`,
  }),
} as const;
