/**
 * Physical memory ({mem}, keys.ts): the scripts of struct page — alloc_page, put_page, get_page,
 * copies, accesses, and the crash recovery of pending frames. Every one of them is called with
 * all the {mem} keys (MEM_ROLES, in that order: KEYS[1] meta, [2] frames, [3] fenced, [4] once,
 * [5] pending) and touches that one slot only. A frame record is read and written only through
 * the helpers of mem/lua.ts (frame_get/frame_set/frame_add/frame_update, free_push/free_pop).
 */
import { z } from 'zod';
import { Bit, Int, IntOrNone, Ints, PfnGen, Str, Strs, oneOf, script, tagged } from '../boundary';
import { FRAME_BYTES, MEM_ROLES } from '../keys';
import { LUA_HELPERS } from '../lua';
import { MEM_LUA } from './lua';

/** The helpers every {mem} script starts with. */
const HELPERS = LUA_HELPERS + MEM_LUA;
/** The most frames one table holds: a Redis string is at most 512 MiB. */
export const MAX_FRAMES = Math.floor((512 * 1024 * 1024) / FRAME_BYTES) - 1;
/**
 * rmqueueBulk takes at most 1/RESERVE_FRACTION of the free frames for one replica's batch (and
 * at least one, while any is free): a small machine is not emptied into batches.
 */
export const RESERVE_FRACTION = 16;
/** The most swap slots a lab's swap device has. */
export const MAX_SWAP_SLOTS = 1 << 20;

export const MEM_SCRIPTS = {
  memFormat: script({
    doc: `Format physical memory once: pfn 0 is the zero page, 1..n are free (a zero-filled frame table: one SETRANGE, whatever n). Idempotent; refused (an error) when Redis holds memory formatted with another frame layout.`,
    models: 'mem_init(), arch/x86/mm/init_64.c: every frame onto the free lists (free_all_bootmem)',
    keys: MEM_ROLES,
    args: { frames: Int.min(0).max(MAX_FRAMES), swapSlots: Int.min(0).max(MAX_SWAP_SLOTS) },
    reply: Int.describe('frames'),
    lua:
      HELPERS +
      `
local m = redis.call('HMGET', KEYS[1], 'formatted', 'frames', 'layout')
if m[1] == '1' then
  if m[3] ~= FRAME_LAYOUT then
    return redis.error_reply('memory was formatted with another frame layout (' ..
      tostring(m[3] or 'hashes per field') .. ', not ' .. FRAME_LAYOUT .. '): flush Redis to start over')
  end
  return tonumber(m[2])
end
local n = tonumber(ARGV[1])
redis.call('DEL', KEYS[2], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[11])
redis.call('SETRANGE', KEYS[2], (n + 1) * FRAME_BYTES - 1, '\\0')
frame_set(KEYS, 0, 'gen', 1, 'ref', 1, 'map', 0, 'state', ZERO)
redis.call('HSET', KEYS[1], 'frames', n, 'free', 0, 'hwm', 0, 'nr_free', n, 'layout', FRAME_LAYOUT,
  'formatted', 1, 'swap_slots', ARGV[2], 'nr_swap_free', ARGV[2], 'swap_next', 1)
return n
`,
  }),
  allocPage: script({
    doc: `alloc_page(): pop a free frame, bump its gen, refcount 1, mapcount ARGV[2]; content is a copy of frame ARGV[1] (copy_user_highpage) or zero. ARGV[3]: the pending tag's "incarnation|pid|vpn|old" of a frame a fault allocates ('' none: keys.ts {mem}:pending). → {'OK', pfn, gen} | {'ENOMEM'}`,
    models: 'alloc_page_vma(), mm/mempolicy.c (with copy_user_highpage or a zeroed page)',
    keys: MEM_ROLES,
    args: { copyFrom: IntOrNone, mapcount: Int, tag: Str },
    reply: oneOf(tagged('OK', { pfn: Int, gen: Int }), tagged('ENOMEM')),
    lua:
      HELPERS +
      `
local pfn = free_pop(KEYS)
if not pfn then return {'ENOMEM'} end
local v = 0
if ARGV[1] ~= '' and frame_exists(KEYS, ARGV[1]) then v = frame_get(KEYS, ARGV[1], 'data') end
local gen = frame_update(KEYS, pfn, {'INCRBY', 'gen', 1}, {'SET', 'ref', 1}, {'SET', 'map', ARGV[2]},
  {'SET', 'state', USED}, {'SET', 'next', 0}, {'SET', 'data', v})
if ARGV[3] ~= '' then redis.call('HSET', KEYS[5], pfn, gen .. '|' .. ARGV[3]) end
-- page_add_new_anon_rmap() (v3.7): a new anonymous page starts on the active list
lru_activate(KEYS, pfn)
return {'OK', pfn, gen}
`,
  }),
  rmqueueBulk: script({
    doc: `Refill (and report on) the per-replica batch of mm incarnation ARGV[1] (keys.ts {mem}:pending "gen|incarnation|reserve"). First each (pfn, gen, installed, at) of ARGV[3..] that is still that incarnation's reserve frame loses its tag: installed = 1, a fault installed it at time at (µs since the epoch; it is an ordinary mapped page now, and joins the active LRU list at that time); 0, it is given back unused (put: freed). A batch frame is on no LRU list until then. Then up to ARGV[2] frames are taken from the free list — at most nr_free / ${RESERVE_FRACTION}, at least one while any is free (0: none) — each charged as a fresh allocation (gen bumped, refcount 1, mapcount 1, data 0) and tagged as the incarnation's reserve. → {nr_free after, freed pfns, {pfn, gen, ...} taken}`,
    models:
      'rmqueue_bulk() (refill a per_cpu_pages list from the buddy lists) and free_pcppages_bulk(), mm/page_alloc.c v3.7',
    keys: MEM_ROLES,
    args: {
      owner: Str,
      want: Int.min(0).max(1024),
      pages: z.array(z.object({ pfn: Int, gen: Int, installed: Bit, at: Int.min(0) })),
    },
    reply: z
      .tuple([Int, Ints, Ints])
      .transform(([nrFree, freed, taken]) => ({ nrFree, freed, taken }))
      .describe('{nrFree, freed, taken}'),
    lua:
      HELPERS +
      `
local tail = '|' .. ARGV[1] .. '|reserve'
local back = {}
for i = 3, #ARGV, 4 do
  local pfn, gen = ARGV[i], ARGV[i + 1]
  if redis.call('HGET', KEYS[5], pfn) == gen .. tail then
    redis.call('HDEL', KEYS[5], pfn)
    if ARGV[i + 2] == '0' then back[#back + 1] = {pfn, gen}
    -- page_add_new_anon_rmap(): on the active list, at the time its fault installed it
    else lru_activate(KEYS, pfn, tonumber(ARGV[i + 3])) end
  end
end
local freed = put_frames(KEYS, 'map', back)
local want = tonumber(ARGV[2])
local nr = tonumber(redis.call('HGET', KEYS[1], 'nr_free') or '0')
local n = math.min(want, math.floor(nr / ${RESERVE_FRACTION}))
if want > 0 and n < 1 and nr > 0 then n = 1 end
local taken = {}
for _ = 1, n do
  local pfn = free_pop(KEYS)
  if not pfn then break end
  local gen = frame_update(KEYS, pfn, {'INCRBY', 'gen', 1}, {'SET', 'ref', 1}, {'SET', 'map', 1},
    {'SET', 'state', USED}, {'SET', 'next', 0}, {'SET', 'data', 0})
  redis.call('HSET', KEYS[5], pfn, gen .. tail)
  taken[#taken + 1] = pfn; taken[#taken + 1] = gen
end
return {tonumber(redis.call('HGET', KEYS[1], 'nr_free') or '0'), freed, taken}
`,
  }),
  reserveReap: script({
    doc: `The batch of a dead mm incarnation ARGV[1], once the reaper fenced it off every pid of its index and read there which of its reserve frames its faults installed (ARGV[2..]: (pfn, gen) pairs, from {p:<pid>}:rsv): every frame still tagged as its reserve loses the tag — an installed one stays as the page table's (rolled forward), any other is freed (it was never installed: rolled back). → {kept, freed pfns}`,
    models:
      'drain_pages() of a dead CPU (page_alloc_cpu_notify, CPU_DEAD), mm/page_alloc.c v3.7: its per_cpu_pages list goes back',
    keys: MEM_ROLES,
    args: { owner: Str, installed: z.array(PfnGen) },
    reply: z
      .tuple([Int, Ints])
      .transform(([kept, freed]) => ({ kept, freed }))
      .describe('{kept, freed}'),
    lua:
      HELPERS +
      `
local tail = '|' .. ARGV[1] .. '|reserve'
local inst = {}
for _, p in ipairs(pairs_of(ARGV, 2)) do inst[p[1] .. ':' .. p[2]] = true end
local all = redis.call('HGETALL', KEYS[5])
local back, kept = {}, 0
for i = 1, #all, 2 do
  local pfn, t = all[i], all[i + 1]
  if #t > #tail and string.sub(t, -#tail) == tail then
    local gen = string.sub(t, 1, #t - #tail)
    redis.call('HDEL', KEYS[5], pfn)
    if inst[pfn .. ':' .. gen] then
      kept = kept + 1
      lru_activate(KEYS, pfn)
    else back[#back + 1] = {pfn, gen} end
  end
end
local freed = put_frames(KEYS, 'map', back)
return {kept, freed}
`,
  }),
  putPages: script({
    doc: `put_page() on each (pfn, gen) of ARGV[4..]: drop a mapping (ARGV[1] = 'map') or a bare reference ('ref'); a frame whose refcount reaches 0 goes back on the free list. The zero page is never freed. A pfn whose gen no longer matches, or that is already free, is a double free: it is reported, not applied. ARGV[1] = 'unpin': a device's pins, all or nothing — one bad pfn and none is applied (the caller's error); with an owner ARGV[3] ('<agent>@<pid>'), a pfn is bad unless {mem}:pins holds that many pins of it by that owner (getPages 'ref'), which are dropped from it. ARGV[1] = 'pending': frames a fault allocated and did not install, given back by their owner ARGV[3] — only those whose pending tag still names it (a frame reaped meanwhile as a dead incarnation's is skipped). ARGV[2]: a batch id ('' none) — a batch applied once is not applied again (the put of a dead replica's intent, finished by another). → {freed pfns, bad pfns}`,
    models: 'put_page(), mm/swap.c (with page_remove_rmap for a mapping)',
    keys: MEM_ROLES,
    args: {
      kind: z.enum(['map', 'ref', 'unpin', 'pending']),
      batch: Str,
      owner: Str,
      pages: z.array(PfnGen),
    },
    reply: z
      .tuple([Ints, Ints])
      .transform(([freed, bad]) => ({ freed, bad }))
      .describe('{freed, bad}'),
    lua:
      HELPERS +
      `
if ARGV[2] ~= '' then
  if redis.call('HSETNX', KEYS[4], ARGV[2], 1) == 0 then return {{}, {}} end
end
local list = pairs_of(ARGV, 4)
if ARGV[1] == 'unpin' then
  local bad, need = {}, {}
  for _, p in ipairs(list) do
    local live, st = frame_live(KEYS, p[1], p[2])
    if st ~= ZERO and not live then bad[#bad + 1] = tonumber(p[1])
    elseif st ~= ZERO and ARGV[3] ~= '' then
      local f = ARGV[3] .. '|' .. p[1] .. '|' .. p[2]
      need[f] = (need[f] or 0) + 1
      if tonumber(redis.call('HGET', KEYS[11], f) or '0') < need[f] then bad[#bad + 1] = tonumber(p[1]) end
    end
  end
  if #bad > 0 then return {{}, bad} end
  for f, n in pairs(need) do
    if redis.call('HINCRBY', KEYS[11], f, -n) <= 0 then redis.call('HDEL', KEYS[11], f) end
  end
  local freed, b = put_frames(KEYS, 'ref', list)
  return {freed, b}
end
if ARGV[1] == 'pending' then
  local mine = {}
  for _, p in ipairs(list) do
    local t = redis.call('HGET', KEYS[5], p[1])
    if t and string.sub(t, 1, #p[2] + #ARGV[3] + 2) == p[2] .. '|' .. ARGV[3] .. '|'
      and string.sub(t, -8) ~= '|reserve' then
      redis.call('HDEL', KEYS[5], p[1])
      mine[#mine + 1] = p
    end
  end
  local freed, b = put_frames(KEYS, 'map', mine)
  return {freed, b}
end
local freed, bad = put_frames(KEYS, ARGV[1], list)
return {freed, bad}
`,
  }),
  pagesInstalled: script({
    doc: `Frames a fault of incarnation ARGV[1] allocated are installed in PTEs now (do_anonymous_page set_pte_at, or do_wp_page's set_pte_at_notify): their pending tags go, and for a COW the put of the page it replaced (the tag's old) is done in the same step — unless someone who found the frame in a PTE did both already. KEYS MEM_KEYS; ARGV owner (pfn gen)... → {freed pfns}`,
    models: 'set_pte_at() of do_anonymous_page / do_wp_page, mm/memory.c (the page is mapped now)',
    keys: MEM_ROLES,
    args: { owner: Str, pages: z.array(PfnGen) },
    reply: Ints.describe('freed'),
    lua:
      HELPERS +
      `
local owed = {}
for _, p in ipairs(pairs_of(ARGV, 2)) do
  local t = redis.call('HGET', KEYS[5], p[1])
  if t and string.sub(t, 1, #p[2] + #ARGV[1] + 2) == p[2] .. '|' .. ARGV[1] .. '|'
    and string.sub(t, -8) ~= '|reserve' then
    untag(KEYS, p[1], p[2], owed)
  end
end
local freed = put_frames(KEYS, 'map', owed)
return freed
`,
  }),
  isolatedReap: script({
    doc: `The isolation record u:<ARGV[1]> of dead incarnation ARGV[2] (isolateLruPages; orphan_ranges.ts): each of its frames still isolated — used, of its gen, on no LRU list and in no other isolation record — goes back as putback_lru_page() does (the isolation's reference dropped: freed if it was the last; else onto the inactive list), then the record goes. What the page's reclaim did before the death stands (its swap slot and swap-cache place, the mappings made swap entries): a later pass frees a swap-cache page nothing maps. A frame the dead one put back, freed or that is isolated again since is left alone. → {'GONE'} | {'BACK', put back, freed pfn, gen, ...}`,
    models: "none: lab crash recovery of shrink_page_list's isolated batch (putback_lru_page)",
    keys: MEM_ROLES,
    args: { rec: Str, owner: Str },
    reply: oneOf(tagged('GONE'), tagged('BACK', { back: Int, freed: Ints })),
    lua:
      HELPERS +
      `
local field = 'u:' .. ARGV[1]
local t = redis.call('HGET', KEYS[5], field)
if not t or string.sub(t, 1, #ARGV[2] + 12) ~= '0|' .. ARGV[2] .. '|isolated|' then return {'GONE'} end
local others = {}
local all = redis.call('HGETALL', KEYS[5])
for i = 1, #all, 2 do
  if all[i] ~= field and string.sub(all[i], 1, 2) == 'u:' then
    for pg in string.gmatch(string.match(all[i + 1], '^0|[^|]*|isolated|(.*)$') or '', '%S+') do
      others[pg] = true
    end
  end
end
local back, freed = 0, {}
for pg in string.gmatch(string.sub(t, #ARGV[2] + 13), '%S+') do
  local pfn, gen = string.match(pg, '^(%d+):(%d+)$')
  if pfn and not others[pg] and frame_live(KEYS, pfn, gen)
    and not redis.call('ZSCORE', KEYS[7], pfn) and not redis.call('ZSCORE', KEYS[8], pfn)
    and not redis.call('HGET', KEYS[5], pfn) then
    back = back + 1
    if frame_add(KEYS, pfn, 'ref', -1) <= 0 then
      free_push(KEYS, pfn)
      freed[#freed + 1] = tonumber(pfn); freed[#freed + 1] = tonumber(gen)
    else
      lru_add(KEYS, pfn)
    end
  end
end
redis.call('HDEL', KEYS[5], field)
return {'BACK', back, freed}
`,
  }),
  pendingReap: script({
    doc: `A pending frame of a dead incarnation ARGV[3] (orphan_ranges.ts): ARGV[4] = 1 when a PTE of its process holds it (found by pendingFence, after which the dead one can install nothing there): the fault happened, so only the COW's owed put of old is done (rolled forward); 0: it was never installed and goes back (rolled back). KEYS MEM_KEYS; ARGV pfn gen owner installed → {'GONE'} | {'FORWARD', freed} | {'BACK', freed}`,
    models: 'none: lab crash recovery of a page a dead replica allocated (rolled forward or back)',
    keys: MEM_ROLES,
    args: { pfn: Int, gen: Int, owner: Str, installed: Bit },
    reply: oneOf(
      tagged('GONE'),
      tagged('FORWARD', { freed: Ints }),
      tagged('BACK', { freed: Ints }),
    ),
    lua:
      HELPERS +
      `
local t = redis.call('HGET', KEYS[5], ARGV[1])
local head = ARGV[2] .. '|' .. ARGV[3] .. '|'
if not t or string.sub(t, 1, #head) ~= head then return {'GONE'} end
if ARGV[4] == '1' then
  local owed = {}
  untag(KEYS, ARGV[1], ARGV[2], owed)
  return {'FORWARD', (put_frames(KEYS, 'map', owed))}
end
redis.call('HDEL', KEYS[5], ARGV[1])
return {'BACK', (put_frames(KEYS, 'map', {{ARGV[1], ARGV[2]}}))}
`,
  }),
  batchUndo: script({
    doc: `fork's get_page of a chunk of the child's frames (batch ARGV[1]), rolled back: if the batch was applied, its references are put; either way it is marked undone, so a get of it that comes later (a stopped replica resuming) is refused. KEYS MEM_KEYS; ARGV batch (pfn gen)... → {'PUT', freed} | {'NOT_APPLIED'} | {'UNDONE'}`,
    models: "none: lab crash recovery of dup_mmap's get_page of a chunk (copy_one_pte)",
    keys: MEM_ROLES,
    args: { batch: Str, pages: z.array(PfnGen) },
    reply: oneOf(tagged('PUT', { freed: Ints }), tagged('NOT_APPLIED'), tagged('UNDONE')),
    lua:
      HELPERS +
      `
local v = redis.call('HGET', KEYS[4], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], 'undone')
if not v then return {'NOT_APPLIED'} end
if v == 'undone' then return {'UNDONE'} end
return {'PUT', (put_frames(KEYS, 'map', pairs_of(ARGV, 2)))}
`,
  }),
  frameAccess: script({
    doc: `A load or store through a translation: the access lands whatever the frame's state (as on hardware); the caller compares the returned gen/state with its translation. An agent that was fenced (its notifier lease expired) is refused. ARGV: pfn, 'read'|'write', value, agent → {'OK', gen, state, value} | {'EFAULT'} | {'FENCED'}`,
    models: 'a load or store through a TLB entry (hardware), checked against an IOMMU fence',
    keys: MEM_ROLES,
    args: { pfn: Int, op: z.enum(['read', 'write']), value: Int, agent: Str },
    reply: oneOf(
      tagged('OK', { gen: Int, state: Str, value: Int }),
      tagged('EFAULT'),
      tagged('FENCED'),
    ),
    lua:
      HELPERS +
      `
if redis.call('SISMEMBER', KEYS[3], ARGV[4]) == 1 then return {'FENCED'} end
if not frame_exists(KEYS, ARGV[1]) then return {'EFAULT'} end
local gen, st, v
if ARGV[2] == 'write' then
  local _
  _, gen, st, v = frame_update(KEYS, ARGV[1], {'SET', 'data', ARGV[3]}, {'GET', 'gen'}, {'GET', 'state'},
    {'GET', 'data'})
else
  gen, st, v = frame_get(KEYS, ARGV[1], 'gen', 'state', 'data')
end
return {'OK', gen, state_name(st), v}
`,
  }),
  getPages: script({
    doc: `get_page() for each (pfn, gen) of ARGV[4..]: a new mapping (ARGV[1] = 'map': fork shares the frame) or a bare reference ('ref': a long-term pin); a negative pfn is a swap entry (-slot, slot gen) fork copied: swap_duplicate. The zero page is not counted. A pin ('ref') with an owner ARGV[3] ('<agent>@<pid>') is recorded in {mem}:pins, so that only that owner can drop it (putPages 'unpin'). A pfn whose gen moved on (freed or reused meanwhile) is reported, not taken. A frame found in a PTE is installed: its pending tag goes, with the COW's owed put (put_frames). ARGV[2]: a batch id ('' none): applied once; refused once undone (batchUndo). → {'OK', bad pfns} | {'DONE'} (applied already) | {'UNDONE'}`,
    models: 'get_page(), include/linux/mm.h (page_dup_rmap in copy_one_pte for a mapping)',
    keys: MEM_ROLES,
    args: {
      kind: z.enum(['map', 'ref']),
      batch: Str,
      owner: Str.describe("a device's pin: '<agent>@<pid>', recorded in {mem}:pins ('' none)"),
      pages: z.array(PfnGen),
    },
    reply: oneOf(tagged('OK', { bad: Ints }), tagged('DONE'), tagged('UNDONE')),
    lua:
      HELPERS +
      `
if ARGV[2] ~= '' then
  local v = redis.call('HGET', KEYS[4], ARGV[2])
  if v == 'undone' then return {'UNDONE'} end
  if v then return {'DONE'} end
  redis.call('HSET', KEYS[4], ARGV[2], 1)
end
local bad, owed = {}, {}
for _, p in ipairs(pairs_of(ARGV, 4)) do
  local pfn, gen = p[1], p[2]
  local live, st = frame_live(KEYS, pfn, gen)
  if ARGV[1] == 'ref' and ARGV[3] ~= '' and live and st ~= ZERO then
    redis.call('HINCRBY', KEYS[11], ARGV[3] .. '|' .. pfn .. '|' .. gen, 1)
  end
  if tonumber(pfn) < 0 then
    -- a swap entry copied to the child (copy_one_pte): swap_duplicate
    if not swap_count(KEYS, -tonumber(pfn), gen, 1) then bad[#bad + 1] = tonumber(pfn) end
  elseif st == ZERO then
  elseif not live then
    bad[#bad + 1] = tonumber(pfn)
  else
    untag(KEYS, pfn, gen, owed)
    local head = compound_head(KEYS, pfn)
    if head ~= tonumber(pfn) then
      -- a pin of a tail page (get_page of a THP subpage, v3.7 tail refcounting): the tail's
      -- count and its head's (a tail is mapped only through its head's huge entry)
      frame_add(KEYS, pfn, 'ref', 1)
      frame_add(KEYS, head, 'ref', 1)
    elseif ARGV[1] == 'map' then frame_add(KEYS, pfn, 'ref', 1, 'map', 1)
    else frame_add(KEYS, pfn, 'ref', 1) end
  end
end
put_frames(KEYS, 'map', owed)
return {'OK', bad}
`,
  }),
  copyPage: script({
    doc: `copy_user_highpage(): ARGV src dst [old]. With old ("pfn:gen" of src), dst is a pending frame that now backs a COW of src: its tag's old is set (the put owed once it is installed).`,
    models: 'copy_user_highpage(), include/linux/highmem.h',
    keys: MEM_ROLES,
    args: { src: Int, dst: Int, old: z.string().describe('"pfn:gen" or empty') },
    reply: z.literal(1).describe('1'),
    lua:
      HELPERS +
      `
local v = 0
if frame_exists(KEYS, ARGV[1]) then v = frame_get(KEYS, ARGV[1], 'data') end
if frame_exists(KEYS, ARGV[2]) then frame_set(KEYS, ARGV[2], 'data', v) end
if ARGV[3] and ARGV[3] ~= '' then
  local t = redis.call('HGET', KEYS[5], ARGV[2])
  if t then redis.call('HSET', KEYS[5], ARGV[2], (string.gsub(t, '|[^|]*$', '|' .. ARGV[3]))) end
end
return 1
`,
  }),
  isolateLruPages: script({
    doc: `isolate_lru_pages(): up to ARGV[1] frames from the oldest end of the inactive (ARGV[2] = 'inactive', for shrink_inactive_list) or the active list ('active', for shrink_active_list), each taken off the LRU with one more reference (the isolation's: the frame cannot be freed under reclaim). Skipped, left where they are: frames a fault allocated and has not installed (tagged in {mem}:pending: a batch's reserve, a COW's copy). ARGV[3] rec, ARGV[4] owner ('' none): the batch is recorded in the same step as the isolation record u:<rec> of {mem}:pending ("0|owner|isolated|pfn:gen ..."), which its owner ends (isolatedReap of its own record, once the batch is done: whatever is still isolated goes back) and a reaper ends if the owner dies first. → {pfn, gen, ...} isolated`,
    models: 'isolate_lru_pages(), mm/vmscan.c v3.7',
    keys: MEM_ROLES,
    args: { n: Int.min(0).max(1024), list: z.enum(['inactive', 'active']), rec: Str, owner: Str },
    reply: Ints.describe('pfn, gen, pfn, gen, ...'),
    lua:
      HELPERS +
      `
local want = tonumber(ARGV[1])
local key = KEYS[7]
if ARGV[2] == 'active' then key = KEYS[8] end
local out = {}
for _, pfn in ipairs(redis.call('ZRANGE', key, 0, -1)) do
  if #out >= 2 * want then break end
  local st, gen = frame_get(KEYS, pfn, 'state', 'gen')
  if st ~= USED then
    redis.call('ZREM', key, pfn)
  elseif not redis.call('HGET', KEYS[5], pfn) then
    redis.call('ZREM', key, pfn)
    frame_add(KEYS, pfn, 'ref', 1)
    out[#out + 1] = tonumber(pfn); out[#out + 1] = gen
  end
end
if ARGV[3] ~= '' and #out > 0 then
  local l = {}
  for i = 1, #out, 2 do l[#l + 1] = out[i] .. ':' .. out[i + 1] end
  redis.call('HSET', KEYS[5], 'u:' .. ARGV[3], '0|' .. ARGV[4] .. '|isolated|' .. table.concat(l, ' '))
end
return out
`,
  }),
  lruPutback: script({
    doc: `putback_lru_page() of an isolated frame onto the inactive (ARGV[3] = 'inactive': shrink_active_list deactivating it) or the active list ('active'), without the isolation's reference. ARGV[4] rec ('' none): the isolation record of the batch (isolateLruPages) — gone, the batch was put back by a reaper (its owner found dead): 0, nothing done. → 1 | 0 (not that frame any more, or reaped)`,
    models: 'putback_lru_page() / move_active_pages_to_lru(), mm/vmscan.c v3.7',
    keys: MEM_ROLES,
    args: { pfn: Int.min(1), gen: Int, list: z.enum(['inactive', 'active']), rec: Str },
    reply: Bit,
    lua:
      HELPERS +
      `
if ARGV[4] ~= '' and redis.call('HEXISTS', KEYS[5], 'u:' .. ARGV[4]) == 0 then return 0 end
if not frame_live(KEYS, ARGV[1], ARGV[2]) then return 0 end
local ref = frame_add(KEYS, ARGV[1], 'ref', -1)
if ref <= 0 then
  free_push(KEYS, ARGV[1])
  return 1
end
if ARGV[3] == 'active' then lru_activate(KEYS, ARGV[1]) else lru_add(KEYS, ARGV[1]) end
return 1
`,
  }),
  unmapRecordOpen: script({
    doc: `try_to_unmap_one() of the isolated page (pfn, gen) at pid's vpn begins, recorded as u:<rec> of {mem}:pending ("0|owner|unmap|pid|vpn|pfn:gen|slot:sgen"; slot 0: a file's page, no swap entry): for an anonymous page its slot's swap_duplicate in the same step (the swap PTE the unmap will set holds that count). Until unmapRecordEnd one of two puts is owed — the page's mapping once the PTE no longer maps it (page_remove_rmap + page_cache_release), else the duplicate's swap_free — by the owner, or by a reaper once the owner is dead and fenced off pid (unmapFence read the PTE). → 1 | 0 (the slot is stale: nothing done, SWAP_FAIL)`,
    models: 'swap_duplicate() in try_to_unmap_one(), mm/rmap.c v3.7 (recorded for crash recovery)',
    keys: MEM_ROLES,
    args: {
      rec: Str,
      owner: Str,
      pid: Int.min(0),
      vpn: Int.min(0),
      pfn: Int,
      gen: Int,
      slot: Int.min(0),
      slotGen: Int.min(0),
    },
    reply: Bit,
    lua:
      HELPERS +
      `
if tonumber(ARGV[7]) > 0 and not swap_count(KEYS, tonumber(ARGV[7]), ARGV[8], 1) then return 0 end
redis.call('HSET', KEYS[5], 'u:' .. ARGV[1], '0|' .. ARGV[2] .. '|unmap|' .. ARGV[3] .. '|' ..
  ARGV[4] .. '|' .. ARGV[5] .. ':' .. ARGV[6] .. '|' .. ARGV[7] .. ':' .. ARGV[8])
return 1
`,
  }),
  unmapRecordEnd: script({
    doc: `The end of try_to_unmap_one()'s record u:<ARGV[1]> (unmapRecordOpen), if it is still owner ARGV[2]'s: ARGV[3] = 1, the PTE no longer maps the page (a swap entry, or cleared: a file's page) — page_remove_rmap + page_cache_release of the page (the swap cache and the isolation still hold it); 0, it never changed (SWAP_AGAIN) — the slot's duplicate goes back (swap_free). → {'OK', freed} | {'GONE'} (ended already)`,
    models:
      'page_remove_rmap() + page_cache_release() in try_to_unmap_one(), or the swap_free of its duplicate, mm/rmap.c v3.7',
    keys: MEM_ROLES,
    args: { rec: Str, owner: Str, unmapped: z.union([z.literal(0), z.literal(1)]) },
    reply: oneOf(tagged('OK', { freed: Ints }), tagged('GONE')),
    lua:
      HELPERS +
      `
local field = 'u:' .. ARGV[1]
local t = redis.call('HGET', KEYS[5], field)
local pre = '0|' .. ARGV[2] .. '|unmap|'
if not t or string.sub(t, 1, #pre) ~= pre then return {'GONE'} end
local p, g, slot, sg = string.match(t, '|(%d+):(%d+)|(%d+):(%d+)$')
redis.call('HDEL', KEYS[5], field)
local put = {}
if ARGV[3] == '1' then put = {{p, g}}
elseif tonumber(slot) > 0 then put = {{'-' .. slot, sg}} end
return {'OK', (put_frames(KEYS, 'map', put))}
`,
  }),
  addToSwap: script({
    doc: `add_to_swap(): an isolated anonymous frame gets a swap slot and enters the swap cache (one more reference: the cache's), unless it is in the swap cache already (its slot is kept). A file's page-cache page is not anonymous: FILE (its reclaim writes it back to its file). → {'OK', slot, slotGen} | {'ENOSPC'} (no free slot) | {'STALE'} (the frame is not that gen any more) | {'FILE'}`,
    models: 'add_to_swap() → get_swap_page() + add_to_swap_cache(), mm/swap_state.c v3.7',
    keys: MEM_ROLES,
    args: { pfn: Int.min(1), gen: Int },
    reply: oneOf(
      tagged('OK', { slot: Int, slotGen: Int }),
      tagged('ENOSPC'),
      tagged('STALE'),
      tagged('FILE'),
    ),
    lua:
      HELPERS +
      `
if not frame_live(KEYS, ARGV[1], ARGV[2]) then return {'STALE'} end
-- a file's page is written back to its file, never to swap (shrink_page_list: PageAnon only)
if pagecache_of(KEYS, ARGV[1]) then return {'FILE'} end
local have = swapcache_slot(KEYS, ARGV[1])
if have then
  local g = slot_get(KEYS, have)
  return {'OK', have, g}
end
local slot, g = slot_alloc(KEYS)
if not slot then return {'ENOSPC'} end
slot_set(KEYS, slot, g, 0, tonumber(ARGV[1]), tonumber(ARGV[2]), frame_get(KEYS, ARGV[1], 'data'))
redis.call('HSET', KEYS[6], 'p' .. ARGV[1], slot)
frame_add(KEYS, ARGV[1], 'ref', 1)
return {'OK', slot, g}
`,
  }),
  shrinkPage: script({
    doc: `The end of shrink_page_list() for one isolated frame, after try_to_unmap: pageout() writes its word to its swap slot, and __remove_mapping() frees it when only the isolation and the swap cache hold it (no mapping, no pin): it leaves the swap cache and goes back on the free list (FREED). Otherwise it keeps its slot and its swap-cache place (a pinned page, unmapped, stays shared through the swap cache: a refault finds it) and goes back on the LRU without the isolation's reference: KEPT with its mapcount and refcount before. ARGV[3] = 1 (referenced): activate, keep everything (activate_locked). A file's page (in the page cache, not the swap cache): pageout() writes a dirty one unmapped back to its file's store (then ino, page, value say what it wrote), and __remove_mapping() frees it when only the page cache and the isolation hold it. → {'FREED', [ino, page, value]} | {'KEPT', map, ref, [ino, page, value]} | {'STALE'}`,
    models:
      'shrink_page_list(): pageout(), __remove_mapping() / putback_lru_page() / activate_locked, mm/vmscan.c v3.7',
    keys: MEM_ROLES,
    args: { pfn: Int.min(1), gen: Int, referenced: Bit, rec: Str },
    reply: oneOf(
      tagged('FREED', { ino: Int.optional(), page: Int.optional(), value: Int.optional() }),
      tagged('KEPT', {
        map: Int,
        ref: Int,
        ino: Int.optional(),
        page: Int.optional(),
        value: Int.optional(),
      }),
      tagged('STALE'),
    ),
    lua:
      HELPERS +
      `
local pfn = ARGV[1]
-- the isolation record gone: a reaper put the batch back (this replica was taken for dead)
if ARGV[4] ~= '' and redis.call('HEXISTS', KEYS[5], 'u:' .. ARGV[4]) == 0 then return {'STALE'} end
if not frame_live(KEYS, pfn, ARGV[2]) then return {'STALE'} end
local ref, map, data = frame_get(KEYS, pfn, 'ref', 'map', 'data')
local ino, idx, dirty = pagecache_of(KEYS, pfn)
if ino then
  -- a file's page: pageout() writes it back when dirty (writepage: its word to the backing
  -- store), and __remove_mapping() drops it from the page cache once only the cache and the
  -- isolation hold it
  if file_shmem(KEYS, ino) then
    -- shmem_writepage(): no backing store — an unmapped page goes to a swap slot, and the
    -- page cache keeps the swap entry in its place (the slot's one reference)
    if ARGV[3] ~= '1' and map == 0 and ref == 2 then
      local slot, g = slot_alloc(KEYS)
      if slot then
        slot_set(KEYS, slot, g, 1, 0, 0, data)
        redis.call('HSET', KEYS[9], 'c' .. ino .. ':' .. idx, 's' .. slot .. ':' .. g)
        redis.call('HDEL', KEYS[9], 'p' .. pfn)
        frame_set(KEYS, pfn, 'ref', 0)
        free_push(KEYS, pfn)
        return {'FREED'}
      end
    end
    frame_add(KEYS, pfn, 'ref', -1)
    if ARGV[3] == '1' or map > 0 or ref == 2 then lru_activate(KEYS, pfn) else lru_add(KEYS, pfn) end
    return {'KEPT', map, ref}
  end
  local wrote = {}
  if ARGV[3] ~= '1' and map == 0 and dirty then
    redis.call('HSET', KEYS[9], 'd' .. ino .. ':' .. idx, int_arg(data))
    pagecache_mark(KEYS, pfn, ino, idx, false)
    wrote = {ino, idx, data}
  end
  if ARGV[3] ~= '1' and map == 0 and ref == 2 then
    pagecache_del(KEYS, pfn)
    frame_set(KEYS, pfn, 'ref', 0)
    free_push(KEYS, pfn)
    return {'FREED', unpack(wrote)}
  end
  frame_add(KEYS, pfn, 'ref', -1)
  if ARGV[3] == '1' or map > 0 then lru_activate(KEYS, pfn) else lru_add(KEYS, pfn) end
  return {'KEPT', map, ref, unpack(wrote)}
end
local slot = swapcache_slot(KEYS, pfn)
if slot and map == 0 then
  -- pageout(): the page's word to its slot (swap_writepage)
  local g, c, p, pg = slot_get(KEYS, slot)
  slot_set(KEYS, slot, g, c, p, pg, data)
end
if ARGV[3] ~= '1' and slot and map == 0 and ref == 2 then
  swapcache_del(KEYS, pfn)
  frame_set(KEYS, pfn, 'ref', 0)
  free_push(KEYS, pfn)
  return {'FREED'}
end
frame_add(KEYS, pfn, 'ref', -1)
if ARGV[3] == '1' or map > 0 then lru_activate(KEYS, pfn) else lru_add(KEYS, pfn) end
return {'KEPT', map, ref}
`,
  }),
  swapinPage: script({
    doc: `do_swap_page()'s page for a swap entry (slot, slot gen): the swap cache's page when it has one (lookup_swap_cache: get_page as a new mapping), else a fresh frame read from the slot (swapin_readahead: allocated, the slot's word copied in, added to the swap cache — refcount 2, the mapping's and the cache's — and to the LRU). The caller installs it over the same swap entry (fault's SWAPIN) and then frees the entry (putPages with -slot), or puts the page back if the PTE changed. ARGV[3]: the pending tag "incarnation|pid|vpn|-slot:slotGen" of the fault ('' none: keys.ts {mem}:pending): the page is tagged pending for it, unless it is mapped already or another fault's tag is on it (tagged 0), so that if the replica dies before the install a survivor puts the mapping back, and if after it, does the swap_free owed (the tag's old: pagesInstalled, pendingReap). → {'OK', pfn, gen, cached, tagged} | {'STALE'} (the entry's slot was freed or reused: the PTE changed, fault again) | {'ENOMEM'}`,
    models:
      'do_swap_page(): lookup_swap_cache() / swapin_readahead() → read_swap_cache_async(), mm/memory.c + mm/swap_state.c v3.7',
    keys: MEM_ROLES,
    args: { slot: Int.min(1), slotGen: Int, tag: Str },
    reply: oneOf(
      tagged('OK', { pfn: Int, gen: Int, cached: Bit, tagged: Bit }),
      tagged('STALE'),
      tagged('ENOMEM'),
    ),
    lua:
      HELPERS +
      `
local slot = tonumber(ARGV[1])
local g, c, p, pg, d = slot_get(KEYS, slot)
if not g or g ~= tonumber(ARGV[2]) or c == 0 then return {'STALE'} end
if p ~= 0 then
  if not frame_live(KEYS, p, pg) then error({err = 'swap cache corrupt: slot ' .. slot .. ' names pfn ' .. p}) end
  -- tagged only when nothing maps it yet: a page mapped elsewhere is put by others, and a put
  -- drops a pending tag (and does its owed swap_free) — not this fault's to lose
  local m0 = frame_get(KEYS, p, 'map')
  frame_add(KEYS, p, 'ref', 1, 'map', 1)
  local tagged = 0
  if ARGV[3] ~= '' and m0 == 0 and redis.call('HSETNX', KEYS[5], p, pg .. '|' .. ARGV[3]) == 1 then
    tagged = 1
  end
  return {'OK', p, pg, 1, tagged}
end
local pfn = free_pop(KEYS)
if not pfn then return {'ENOMEM'} end
local gen = frame_update(KEYS, pfn, {'INCRBY', 'gen', 1}, {'SET', 'ref', 2}, {'SET', 'map', 1},
  {'SET', 'state', USED}, {'SET', 'next', 0}, {'SET', 'data', int_arg(d)})
slot_set(KEYS, slot, g, c, pfn, gen, d)
redis.call('HSET', KEYS[6], 'p' .. pfn, slot)
lru_add(KEYS, pfn)
local tagged = 0
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[5], pfn, gen .. '|' .. ARGV[3])
  tagged = 1
end
return {'OK', pfn, gen, 0, tagged}
`,
  }),
  reuseSwapPage: script({
    doc: `reuse_swap_page(): may do_wp_page write to this anonymous page in place (a file's page-cache page, an XIP block, the XIP sparse page or a KSM page: never)? Its mapcount plus, when it is in the swap cache, the count of swap PTEs still naming its slot (a forked sibling swapped out and not yet back) must be at most 1; a page reused that way leaves the swap cache (delete_from_swap_cache: its slot, now stale, is freed once no swap PTE names it). A stale gen: no. → {reuse, map, swapcount}`,
    models: 'reuse_swap_page(), mm/swapfile.c v3.7',
    keys: MEM_ROLES,
    args: { pfn: Int, gen: Int },
    reply: z
      .tuple([Bit, Int, Int])
      .transform(([reuse, map, swapcount]) => ({ reuse: reuse === 1, map, swapcount }))
      .describe('{reuse, map, swapcount}'),
    lua:
      HELPERS +
      `
if not frame_live(KEYS, ARGV[1], ARGV[2]) then return {0, 0, 0} end
local map = frame_get(KEYS, ARGV[1], 'map')
-- do_wp_page() reuses PageAnon pages only: a file's page in a private mapping is copied (an
-- XIP file's block, and the XIP sparse page, too)
if pagecache_of(KEYS, ARGV[1]) or xip_sparse(KEYS) == tonumber(ARGV[1]) then return {0, map, 0} end
-- "KSM pages are always copied" (do_wp_page: PageAnon && !PageKsm before reuse_swap_page)
if page_ksm(KEYS, ARGV[1]) then return {0, map, 0} end
local slot = swapcache_slot(KEYS, ARGV[1])
local sc = 0
if slot then
  local g, c = slot_get(KEYS, slot)
  sc = c or 0
end
if map + sc > 1 then return {0, map, sc} end
if slot then
  swapcache_del(KEYS, ARGV[1])
  frame_add(KEYS, ARGV[1], 'ref', -1)
end
return {1, map, sc}
`,
  }),
  fileCreate: script({
    doc: `A new file of ARGV[1] pages, all holes (read as 0), on a backing store of its own; xip = 1: an XIP file (its pages are read and written in place, no page cache); shmem = 1: the shmem object of a MAP_SHARED|MAP_ANONYMOUS mapping (no backing store: its pages go to swap). → ino`,
    models: 'vfs_create() of a regular file (its inode and address_space), fs/namei.c v3.7',
    keys: MEM_ROLES,
    args: { pages: Int.min(1), xip: Bit, shmem: Bit },
    reply: Int.describe('ino'),
    lua:
      HELPERS +
      `
local ino = redis.call('HINCRBY', KEYS[9], 'ino_next', 1)
redis.call('HSET', KEYS[9], 'f' .. ino, ARGV[1] .. '|' .. ARGV[2])
if ARGV[3] == '1' then redis.call('HSET', KEYS[9], 'm' .. ino, 1) end
return ino
`,
  }),
  filemapFault: script({
    doc: `filemap_fault(): page ARGV[2] of file ARGV[1] from its page cache — the cached frame (find_get_page) or a fresh one read from the backing store and added to the cache and the LRU (page_cache_read) — with one more reference for the caller: a mapping (ARGV[3] = 'map': mapcount and refcount, as the PTE it goes into will hold) or a bare one ('ref': the page a private write copies). The caller installs it (fault's file = 'page') or puts it back. An XIP file has no page cache: XIP (its vm_ops->fault is xip_file_fault: xipGetMem). → {'OK', pfn, gen, cached} | {'SIGBUS'} (past the end of the file) | {'ENOENT'} (no such file) | {'ENOMEM'} | {'XIP'}`,
    models: 'filemap_fault() → find_get_page() / page_cache_read(), mm/filemap.c v3.7',
    keys: MEM_ROLES,
    args: { ino: Int, page: Int, kind: z.enum(['map', 'ref']) },
    reply: oneOf(
      tagged('OK', { pfn: Int, gen: Int, cached: Bit }),
      tagged('SIGBUS'),
      tagged('ENOENT'),
      tagged('ENOMEM'),
      tagged('XIP'),
    ),
    lua:
      HELPERS +
      `
local i, xip = file_page(KEYS, ARGV[1], ARGV[2], 'SIGBUS')
if not i then return {xip} end
if xip then return {'XIP'} end
local pfn, gen, cached = pagecache_get(KEYS, ARGV[1], i)
if not pfn then return {'ENOMEM'} end
if ARGV[3] == 'map' then frame_add(KEYS, pfn, 'ref', 1, 'map', 1) else frame_add(KEYS, pfn, 'ref', 1) end
return {'OK', pfn, gen, cached}
`,
  }),
  fileRead: script({
    doc: `read() of page ARGV[2] of file ARGV[1]: through the page cache (do_generic_file_read: the cached page, or one read in from the backing store and left cached). An XIP file (xip_file_read → do_xip_mapping_read): its block read in place, a hole reads 0 (pfn 0, gen 0), nothing allocated (cached 0). → {'OK', value, pfn, gen, cached} | {'EINVAL'} (past the end) | {'ENOENT'} | {'ENOMEM'}`,
    models:
      'do_generic_file_read(), mm/filemap.c v3.7; do_xip_mapping_read(), mm/filemap_xip.c v3.7',
    keys: MEM_ROLES,
    args: { ino: Int, page: Int },
    reply: oneOf(
      tagged('OK', { value: Int, pfn: Int, gen: Int, cached: Bit }),
      tagged('EINVAL'),
      tagged('ENOENT'),
      tagged('ENOMEM'),
    ),
    lua:
      HELPERS +
      `
local i, xip = file_page(KEYS, ARGV[1], ARGV[2], 'EINVAL')
if not i then return {xip} end
if xip then
  -- get_xip_mem(create = 0): the block, or -ENODATA (a hole: __clear_user, zeros)
  local b, bg = xip_block(KEYS, ARGV[1], i)
  if not b then return {'OK', 0, 0, 0, 0} end
  return {'OK', frame_get(KEYS, b, 'data'), b, bg, 0}
end
local pfn, gen, cached = pagecache_get(KEYS, ARGV[1], i)
if not pfn then return {'ENOMEM'} end
return {'OK', frame_get(KEYS, pfn, 'data'), pfn, gen, cached}
`,
  }),
  fileWrite: script({
    doc: `write() of the word ARGV[3] to page ARGV[2] of file ARGV[1]: into its page-cache page (read in first when not cached), which becomes dirty (written back by msync or reclaim). Every mapping of the page sees it at once: it is the same frame. An XIP file (__xip_file_write): into its block in place (no dirty bit, nothing to write back; cached 0); a hole answers XIP_HOLE — the caller allocates the block (xipGetMem create), runs __xip_unmap, and writes again. → {'OK', pfn, gen, cached} | {'EINVAL'} (past the end: files do not grow) | {'ENOENT'} | {'ENOMEM'} | {'XIP_HOLE'}`,
    models:
      'generic_perform_write() (write_begin, copy, write_end → set_page_dirty), mm/filemap.c v3.7',
    keys: MEM_ROLES,
    args: { ino: Int, page: Int, value: Int },
    reply: oneOf(
      tagged('OK', { pfn: Int, gen: Int, cached: Bit }),
      tagged('EINVAL'),
      tagged('ENOENT'),
      tagged('ENOMEM'),
      tagged('XIP_HOLE'),
    ),
    lua:
      HELPERS +
      `
local i, xip = file_page(KEYS, ARGV[1], ARGV[2], 'EINVAL')
if not i then return {xip} end
if xip then
  -- __xip_file_write(): get_xip_mem(create = 0), __copy_from_user_nocache into the block
  local b, bg = xip_block(KEYS, ARGV[1], i)
  if not b then return {'XIP_HOLE'} end
  frame_set(KEYS, b, 'data', ARGV[3])
  return {'OK', b, bg, 0}
end
local pfn, gen, cached = pagecache_get(KEYS, ARGV[1], i)
if not pfn then return {'ENOMEM'} end
frame_set(KEYS, pfn, 'data', ARGV[3])
pagecache_mark(KEYS, pfn, tonumber(ARGV[1]), i, true)
return {'OK', pfn, gen, cached}
`,
  }),
  setPageDirty: script({
    doc: `set_page_dirty() of a file's page (pfn, gen) a write fault maps writable: written back at the next msync or by reclaim. Not a file's page (an XIP block is the store itself: no dirty bit), or a stale gen: nothing. → 1 | 0`,
    models: 'set_page_dirty(), mm/page-writeback.c v3.7',
    keys: MEM_ROLES,
    args: { pfn: Int, gen: Int },
    reply: Bit,
    lua:
      HELPERS +
      `
if not frame_live(KEYS, ARGV[1], ARGV[2]) then return 0 end
local ino, i, _, xip = pagecache_of(KEYS, ARGV[1])
if not ino or xip then return 0 end
pagecache_mark(KEYS, ARGV[1], ino, i, true)
return 1
`,
  }),
  pagecacheLookup: script({
    doc: `find_get_page() without a reference: the frame caching page ARGV[2] of file ARGV[1], and whether it is dirty. An XIP file has no page cache (msync of it writes nothing): NONE. → {'OK', pfn, gen, dirty} | {'NONE'} (not cached) | {'ENOENT'}`,
    models: 'find_get_page() / pagevec_lookup_tag(PAGECACHE_TAG_DIRTY), mm/filemap.c v3.7',
    keys: MEM_ROLES,
    args: { ino: Int, page: Int },
    reply: oneOf(
      tagged('OK', { pfn: Int, gen: Int, dirty: Bit }),
      tagged('NONE'),
      tagged('ENOENT'),
    ),
    lua:
      HELPERS +
      `
local pages, xip = file_get(KEYS, ARGV[1])
if not pages then return {'ENOENT'} end
if xip then return {'NONE'} end
local pfn, gen = pagecache_find(KEYS, ARGV[1], tonumber(ARGV[2]))
if not pfn then return {'NONE'} end
local _, _, dirty = pagecache_of(KEYS, pfn)
return {'OK', pfn, gen, dirty and 1 or 0}
`,
  }),
  writePage: script({
    doc: `clear_page_dirty_for_io() + writepage() of the page-cache frame (pfn, gen), after page_mkclean write-protected every mapping of it: PG_dirty is cleared, and when it was set — or ARGV[3] = 1, page_mkclean found a writable mapping (its writes dirtied the page without a fault) — its word goes to the backing store. → {'OK', ino, page, value, wrote} | {'STALE'} (no longer that file page)`,
    models:
      'clear_page_dirty_for_io() (mm/page-writeback.c) + a_ops->writepage(), write_cache_pages() v3.7',
    keys: MEM_ROLES,
    args: { pfn: Int, gen: Int, mkcleaned: Bit },
    reply: oneOf(tagged('OK', { ino: Int, page: Int, value: Int, wrote: Bit }), tagged('STALE')),
    lua:
      HELPERS +
      `
if not frame_live(KEYS, ARGV[1], ARGV[2]) then return {'STALE'} end
local ino, i, dirty = pagecache_of(KEYS, ARGV[1])
if not ino then return {'STALE'} end
local v = frame_get(KEYS, ARGV[1], 'data')
if not dirty and ARGV[3] ~= '1' then return {'OK', ino, i, v, 0} end
redis.call('HSET', KEYS[9], 'd' .. ino .. ':' .. i, int_arg(v))
pagecache_mark(KEYS, ARGV[1], ino, i, false)
return {'OK', ino, i, v, 1}
`,
  }),
  pageIndexes: script({
    doc: `page->mapping and page->index of frames: for each pfn of ARGV, "ino:i" when it is page i of file ino in the page cache, else ''. → {"ino:i" | '', ...}`,
    models:
      'page->mapping, page->index (struct page), as try_to_unmap_cluster reads them, mm/rmap.c v3.7',
    keys: MEM_ROLES,
    args: { pfns: Ints },
    reply: Strs.describe('{"ino:i" | "", ...}'),
    lua:
      HELPERS +
      `
local out = {}
for i = 1, #ARGV do
  local ino, idx = pagecache_of(KEYS, ARGV[i])
  out[i] = ino and (ino .. ':' .. idx) or ''
end
return out
`,
  }),
  xipGetMem: script({
    doc: `get_xip_mem() of page ARGV[2] of XIP file ARGV[1], for xip_file_fault and __xip_file_write. The block when it exists; a hole with create = 1 (a shared writable mapping's fault, or write()): a block allocated zero-filled from the free list, owned by the file from now on (new = 1: the caller runs __xip_unmap before it maps or writes it); a hole with create = 0: the sparse page (allocated on first use: new = 1), and — kind 'map' — xip_sparse_seq opened (write_seqcount_begin: the caller closes it with xipSparseDone once its PTE is installed or given up, so a concurrent __xip_unmap scans again). ARGV[3]: the reference the caller gets — 'map' (mapcount and refcount: the PTE it installs, vm_insert_mixed / vm_insert_page), 'ref' (a bare one: the page a private write copies) or 'none' (write()). → {'BLOCK', pfn, gen, new} | {'SPARSE', pfn, gen, new} | {'SIGBUS'} (past the end) | {'ENOENT'} | {'NOTXIP'} | {'ENOMEM'}`,
    models:
      'xip_file_fault() / __xip_file_write() → get_xip_mem(), xip_sparse_page(), mm/filemap_xip.c v3.7',
    keys: MEM_ROLES,
    args: { ino: Int, page: Int, kind: z.enum(['map', 'ref', 'none']), create: Bit },
    reply: oneOf(
      tagged('BLOCK', { pfn: Int, gen: Int, new: Bit }),
      tagged('SPARSE', { pfn: Int, gen: Int, new: Bit }),
      tagged('SIGBUS'),
      tagged('ENOENT'),
      tagged('NOTXIP'),
      tagged('ENOMEM'),
    ),
    lua:
      HELPERS +
      `
local i, xip = file_page(KEYS, ARGV[1], ARGV[2], 'SIGBUS')
if not i then return {xip} end
if not xip then return {'NOTXIP'} end
local function charge(pfn)
  if ARGV[3] == 'map' then frame_add(KEYS, pfn, 'ref', 1, 'map', 1)
  elseif ARGV[3] == 'ref' then frame_add(KEYS, pfn, 'ref', 1) end
end
local pfn, gen, new
if ARGV[4] == '1' then
  pfn, gen, new = xip_block_create(KEYS, ARGV[1], i)
  if not pfn then return {'ENOMEM'} end
  charge(pfn)
  return {'BLOCK', pfn, gen, new}
end
pfn, gen = xip_block(KEYS, ARGV[1], i)
if pfn then
  charge(pfn)
  return {'BLOCK', pfn, gen, 0}
end
pfn, gen, new = xip_sparse_get(KEYS)
if not pfn then return {'ENOMEM'} end
charge(pfn)
if ARGV[3] == 'map' then
  redis.call('HINCRBY', KEYS[9], 'xs_seq', 1)
  redis.call('HINCRBY', KEYS[9], 'xs_busy', 1)
end
return {'SPARSE', pfn, gen, new}
`,
  }),
  xipSparseDone: script({
    doc: `write_seqcount_end(&xip_sparse_seq): a sparse-page fault that opened it (xipGetMem kind 'map') installed its PTE or gave up. → the faults still open`,
    models: 'xip_file_fault(): write_seqcount_end(), mutex_unlock(&xip_sparse_mutex), v3.7',
    keys: MEM_ROLES,
    args: {},
    reply: Int.describe('sparse-page faults still open'),
    lua:
      HELPERS +
      `
local n = redis.call('HINCRBY', KEYS[9], 'xs_busy', -1)
if n < 0 then redis.call('HSET', KEYS[9], 'xs_busy', 0); return 0 end
return n
`,
  }),
  xipSparseSeq: script({
    doc: `read_seqcount_begin(&xip_sparse_seq) and __xip_sparse_page for __xip_unmap: the sparse page (pfn 0: never allocated), how many sparse-page faults ever opened the seqcount, and how many are open now. → {'OK', pfn, gen, seq, busy}`,
    models: '__xip_unmap(): read_seqcount_begin / read_seqcount_retry, mm/filemap_xip.c v3.7',
    keys: MEM_ROLES,
    args: {},
    reply: tagged('OK', { pfn: Int, gen: Int, seq: Int, busy: Int }),
    lua:
      HELPERS +
      `
local pfn, gen = xip_sparse(KEYS)
local m = redis.call('HMGET', KEYS[9], 'xs_seq', 'xs_busy')
return {'OK', pfn or 0, gen or 0, tonumber(m[1]) or 0, tonumber(m[2]) or 0}
`,
  }),
  fileInfo: script({
    doc: `A file's size in pages, whether it is XIP, and whether it is a shmem object. → {'OK', pages, xip, shmem} | {'ENOENT'}`,
    models: 'i_size_read(), include/linux/fs.h v3.7',
    keys: MEM_ROLES,
    args: { ino: Int },
    reply: oneOf(tagged('OK', { pages: Int, xip: Bit, shmem: Bit }), tagged('ENOENT')),
    lua:
      HELPERS +
      `
local pages, xip = file_get(KEYS, ARGV[1])
if not pages then return {'ENOENT'} end
return {'OK', pages, xip and 1 or 0, file_shmem(KEYS, ARGV[1]) and 1 or 0}
`,
  }),
  shmemEvict: script({
    doc: `The last mapping of a shmem object went (its vm_file's last fput → shmem_evict_inode): every page of its page cache leaves it (the cache's reference put: freed unless something still holds it, a pin) and every swap entry in its place is freed; the file is gone. Only a shmem file (else nothing). → {'OK', {pfn, gen, ...} freed} | {'ENOENT'}`,
    models: 'shmem_evict_inode() → shmem_truncate_range(), mm/shmem.c v3.7',
    keys: MEM_ROLES,
    args: { ino: Int },
    reply: oneOf(tagged('OK', { freed: Ints }), tagged('ENOENT')),
    lua:
      HELPERS +
      `
if not file_shmem(KEYS, ARGV[1]) then return {'ENOENT'} end
local prefix = 'c' .. ARGV[1] .. ':'
local freed = {}
for _, f in ipairs(redis.call('HKEYS', KEYS[9])) do
  if string.sub(f, 1, #prefix) == prefix then
    local e = redis.call('HGET', KEYS[9], f)
    local slot, g = string.match(e, '^s(%d+):(%d+)$')
    if slot then
      swap_count(KEYS, tonumber(slot), g, -1)
    else
      local pfn = tonumber(e)
      redis.call('HDEL', KEYS[9], 'p' .. pfn)
      if frame_add(KEYS, pfn, 'ref', -1) <= 0 then
        freed[#freed + 1] = pfn
        freed[#freed + 1] = frame_get(KEYS, pfn, 'gen')
        free_push(KEYS, pfn)
      end
    end
    redis.call('HDEL', KEYS[9], f)
  end
end
redis.call('HDEL', KEYS[9], 'f' .. ARGV[1], 'm' .. ARGV[1])
return {'OK', freed}
`,
  }),
  swapInfo: script({
    doc: `The swap device and the LRU lists: slots, free slots, pages in the swap cache, frames on the inactive and the active list. → {slots, free, cached, inactive, active}`,
    models: 'si_swapinfo(), mm/swapfile.c, and the lruvec counters (mm/vmscan.c)',
    keys: MEM_ROLES,
    args: {},
    reply: z
      .tuple([Int, Int, Int, Int, Int])
      .transform(([slots, free, cached, inactive, active]) => ({
        slots,
        free,
        cached,
        inactive,
        active,
      }))
      .describe('{slots, free, cached, inactive, active}'),
    lua:
      HELPERS +
      `
local m = redis.call('HMGET', KEYS[1], 'swap_slots', 'nr_swap_free')
local cached = 0
for _, f in ipairs(redis.call('HKEYS', KEYS[6])) do
  if string.sub(f, 1, 1) == 'p' then cached = cached + 1 end
end
return {tonumber(m[1]) or 0, tonumber(m[2]) or 0, cached, redis.call('ZCARD', KEYS[7]),
  redis.call('ZCARD', KEYS[8])}
`,
  }),
  memInfo: script({
    doc: `Frame counts and the free list length (nr_free, kept by free_push/free_pop). → {frames, free}`,
    models: 'si_meminfo(), mm/page_alloc.c',
    keys: MEM_ROLES,
    args: {},
    reply: z
      .tuple([Int, Int])
      .transform(([frames, free]) => ({ frames, free }))
      .describe('{frames, free}'),
    lua:
      HELPERS +
      `
local m = redis.call('HMGET', KEYS[1], 'frames', 'nr_free')
return {tonumber(m[1]) or 0, tonumber(m[2]) or 0}
`,
  }),
} as const;
