/**
 * Physical memory of transparent huge pages ({mem}, keys.ts): allocating a compound page
 * (2^order frames with consecutive pfns, the head aligned to 2^order: PG_head/PG_tail and the
 * order in each record's reserved field) and dissolving one (__split_huge_page_refcount). Its
 * put_page and get_page are the ordinary scripts' (mem/lua.ts compound_head: a tail's pin counts
 * on the tail and its head; the head's last reference frees every frame).
 *
 * Crash safety (issue 15): a huge page allocated for a fault, a COW or a collapse is recorded in
 * the allocation's own step as a huge record u:<rec> of {mem}:pending (HUGE_RECORD_LUA, keys.ts):
 * until its end (hugeRecordEnd) either the new page is owed its put (never installed) or the
 * pages it replaces are (installed). Its owner ends it; a survivor's reaper ends a dead owner's
 * after fencing it off the address space and reading whether the entry maps the new page
 * (hugeFence, orphan_ranges.ts). hugetlbfs's pool allocations (hugetlbAlloc) use the same record.
 */
import { z } from 'zod';
import { Bit, Int, Ints, PfnGen, Str, oneOf, script, tagged } from '../boundary';
import { MEM_ROLES } from '../keys';
import { LUA_HELPERS } from '../lua';
import { MEM_LUA } from './lua';

const HELPERS = LUA_HELPERS + MEM_LUA;

/**
 * A huge record's fields as the allocating script takes them (rec '' : none). olds: the pages
 * whose mapping the new page's install owes a put ("pfn:gen ...": a COW's old page, a collapse's
 * small pages).
 */
export const HugeRecordArgs = z.object({
  rec: Str,
  owner: Str,
  pid: Int.min(0),
  hvpn: Int.min(0),
  olds: z
    .string()
    .regex(/^(\d+:\d+( \d+:\d+)*)?$/)
    .describe('"pfn:gen ..."'),
});
export type HugeRecordArgs = z.infer<typeof HugeRecordArgs>;

/**
 * Lua: open the huge record u:<rec> in {mem}:pending (key pend) for the page (pfn, gen) just
 * allocated: "0|owner|huge|<pool>|pid|hvpn|pfn:gen|olds" (pool thp or hugetlb). rec '': none.
 */
export const HUGE_RECORD_LUA = `
local function huge_record_open(pend, pool, rec, owner, pid, hvpn, olds, pfn, gen)
  if rec == '' then return end
  redis.call('HSET', pend, 'u:' .. rec, '0|' .. owner .. '|huge|' .. pool .. '|' .. pid .. '|' ..
    hvpn .. '|' .. pfn .. ':' .. gen .. '|' .. olds)
end
`;

/** The largest huge page order (MMLAB_HUGE_PAGE_ORDER's bound: 2^9 = a 2 MiB pmd of 4 KiB pages). */
export const MAX_HUGE_ORDER = 9;

export const MEM_THP_SCRIPTS = {
  allocHugePage: script({
    doc: `alloc_hugepage_vma(): the lowest 2^order-aligned block of 2^order free frames of the buddy allocator (pfn 0, the zero page, and hugetlbfs's pool are never in one) becomes a compound page — every frame used, of one gen (one more than the highest gen among them, so no gen goes back), the head PG_head with refcount 1 and mapcount 1 (the huge entry the caller installs), the tails PG_tail with refcount and mapcount 0, the order in every record's reserved field. The block leaves the free list (the chain is relinked without it; frames between the old high-water mark and the block go onto the chain). Content: subpage i is a copy of frame srcs[i] (copy_user_huge_page, or __collapse_huge_page_copy for collapse; 0: zero-filled). On no LRU list (reclaim splits first). Scans the frame table: O(frames). With a record (rec not ''), the huge record u:<rec> is opened in the same step (HUGE_RECORD_LUA: "0|owner|huge|thp|pid|hvpn|pfn:gen|olds"). → {'OK', pfn, gen} | {'ENOMEM'} (no such block: the caller falls back to small pages)`,
    models:
      'alloc_hugepage_vma() (__GFP_COMP: prep_compound_page), mm/huge_memory.c + mm/page_alloc.c v3.7',
    keys: MEM_ROLES,
    args: { order: Int.min(1).max(MAX_HUGE_ORDER), ...HugeRecordArgs.shape, srcs: Ints },
    reply: oneOf(tagged('OK', { pfn: Int, gen: Int }), tagged('ENOMEM')),
    lua:
      HELPERS +
      HUGE_RECORD_LUA +
      `
local o = tonumber(ARGV[1])
local n = 2 ^ o
local m = redis.call('HMGET', KEYS[1], 'free', 'hwm', 'frames', 'nr_free')
local frames, hwm = tonumber(m[3]) or 0, tonumber(m[2]) or 0
local head = nil
local h = n
while h + n - 1 <= frames do
  local ok = true
  for p = h, h + n - 1 do
    -- free and no compound flags: hugetlbfs's pool pages are free frames with PG_head/PG_tail,
    -- off the free list, never the buddy allocator's
    local st, fl = frame_get(KEYS, p, 'state', 'flags')
    if st ~= FREE or fl ~= 0 then ok = false; break end
  end
  if ok then head = h; break end
  h = h + n
end
if not head then return {'ENOMEM'} end
local last = head + n - 1
-- the chain without the block, then the frames that were never allocated below it
local chain, seen = {}, {}
local p = tonumber(m[1]) or 0
while p ~= 0 do
  if seen[p] then error({err = 'free list corrupt: pfn ' .. p .. ' twice'}) end
  seen[p] = true
  if p < head or p > last then chain[#chain + 1] = p end
  p = frame_get(KEYS, p, 'next')
end
if last > hwm then
  for q = hwm + 1, head - 1 do chain[#chain + 1] = q end
  hwm = last
end
for i, q in ipairs(chain) do frame_set(KEYS, q, 'next', chain[i + 1] or 0) end
redis.call('HSET', KEYS[1], 'free', chain[1] or 0, 'hwm', hwm, 'nr_free', (tonumber(m[4]) or 0) - n)
local gen = 0
for q = head, last do gen = math.max(gen, frame_get(KEYS, q, 'gen')) end
gen = gen + 1
for i = 0, n - 1 do
  local src = tonumber(ARGV[7 + i] or '0') or 0
  local v = 0
  if src > 0 and frame_exists(KEYS, src) then v = frame_get(KEYS, src, 'data') end
  if i == 0 then
    frame_set(KEYS, head, 'gen', gen, 'ref', 1, 'map', 1, 'state', USED, 'next', 0, 'flags', PG_HEAD,
      'reserved', o, 'data', v)
  else
    frame_set(KEYS, head + i, 'gen', gen, 'ref', 0, 'map', 0, 'state', USED, 'next', 0, 'flags', PG_TAIL,
      'reserved', o, 'data', v)
  end
end
huge_record_open(KEYS[5], 'thp', ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], head, gen)
return {'OK', head, gen}
`,
  }),
  hugeRecordEnd: script({
    doc: `The end of the huge record u:<ARGV[1]> (allocHugePage, hugetlbAlloc: "0|owner|huge|pool|pid|hvpn|pfn:gen|olds"), if it is still owner ARGV[2]'s. ARGV[3] = 1: the new page is installed — the put of each old page's mapping it owes is done (a COW's old page, a collapse's small pages); 0: it never was — the new page's own reference goes (freed: a THP's frames to the buddy allocator, a hugetlb page back to the pool, KEYS[12]). A new page no longer live was installed and put since (only an install gives it away): read as 1. Run by the owner, or by a reaper once the owner is dead and fenced off pid (hugeFence read the entry). → {'OK', installed, freed pfns} | {'GONE'} (ended already)`,
    models:
      'the put_page() of the old page(s) after set_pmd_at / set_huge_pte_at, or of the unused new page (do_huge_pmd_anonymous_page, do_huge_pmd_wp_page, collapse_huge_page, hugetlb_no_page, hugetlb_cow), mm/huge_memory.c + mm/hugetlb.c v3.7 (recorded for crash recovery)',
    keys: [...MEM_ROLES, 'pool'],
    args: { rec: Str, owner: Str, installed: z.union([z.literal(0), z.literal(1)]) },
    reply: oneOf(tagged('OK', { installed: Int, freed: Ints }), tagged('GONE')),
    lua:
      HELPERS +
      `
local field = 'u:' .. ARGV[1]
local t = redis.call('HGET', KEYS[5], field)
local pre = '0|' .. ARGV[2] .. '|huge|'
if not t or string.sub(t, 1, #pre) ~= pre then return {'GONE'} end
local pool, np, ng, olds = string.match(string.sub(t, #pre + 1), '^(%a+)|%d+|%d+|(%d+):(%d+)|(.*)$')
if not pool then error({err = 'huge record ' .. field .. ' corrupt: ' .. t}) end
redis.call('HDEL', KEYS[5], field)
local installed = ARGV[3] == '1'
if not installed and not frame_live(KEYS, np, ng) then installed = true end
local put = {}
if installed then
  for p, g in string.gmatch(olds, '(%d+):(%d+)') do put[#put + 1] = {p, g} end
else
  put = {{np, ng}}
end
local freed = {}
if pool == 'thp' then
  freed = put_frames(KEYS, 'map', put)
else
  -- hugetlbPut's free_huge_page: the pool (KEYS[12]) takes back a head whose last reference went
  local m = redis.call('HMGET', KEYS[12], 'order', 'free')
  local n = 2 ^ tonumber(m[1])
  local free = {}
  for p in string.gmatch(m[2] or '', '%d+') do free[#free + 1] = p end
  for _, x in ipairs(put) do
    if frame_live(KEYS, x[1], x[2]) then
      local ref = frame_add(KEYS, x[1], 'ref', -1, 'map', -1)
      if ref <= 0 then
        local h = tonumber(x[1])
        for q = h, h + n - 1 do frame_set(KEYS, q, 'ref', 0, 'map', 0, 'state', FREE, 'next', 0) end
        free[#free + 1] = h
        freed[#freed + 1] = h
      end
    end
  end
  redis.call('HSET', KEYS[12], 'free_huge_pages', #free, 'free', table.concat(free, ' '))
end
return {'OK', installed and 1 or 0, freed}
`,
  }),
  splitRecordOpen: script({
    doc: `split_huge_page() of the compound page (pfn, gen) begins: recorded as u:<rec> of {mem}:pending ("0|owner|split|pid|hvpn|pfn:gen": pid maps it huge at hvpn), before the first mapping is split, so that a reaper finishes a dead owner's split (every mapping split, then __split_huge_page_refcount: splitHugePage with the record). → 1 | 0 (not a live compound head: nothing recorded)`,
    models:
      'split_huge_page(), mm/huge_memory.c v3.7: its anon_vma lock section (recorded for crash recovery)',
    keys: MEM_ROLES,
    args: { rec: Str, owner: Str, pid: Int.min(0), hvpn: Int.min(0), pfn: Int, gen: Int },
    reply: Bit,
    lua:
      HELPERS +
      `
local fl = frame_get(KEYS, ARGV[5], 'flags')
if not frame_live(KEYS, ARGV[5], ARGV[6]) or not flag_set(fl, PG_HEAD) then return 0 end
redis.call('HSET', KEYS[5], 'u:' .. ARGV[1], '0|' .. ARGV[2] .. '|split|' .. ARGV[3] .. '|' ..
  ARGV[4] .. '|' .. ARGV[5] .. ':' .. ARGV[6])
return 1
`,
  }),
  splitHugePage: script({
    doc: `__split_huge_page_refcount(): the compound page at head (of gen) becomes 2^order ordinary pages, once every huge entry mapping it was replaced by PTEs (the caller's __split_huge_page_map, in each address space): each frame's mapcount becomes the head's (one PTE per former huge mapping), each tail's refcount its pins plus that mapcount, the head's its own pins plus it; flags and order cleared; every frame joins the active LRU list (lru_add_page_tail). With a split record (rec, owner: splitRecordOpen), only while it is still owner's, and it ends in the same step (GONE: ended by someone else, nothing done). → {'OK', order} | {'STALE'} (head is no compound head of that gen) | {'GONE'}`,
    models: '__split_huge_page_refcount(), mm/huge_memory.c v3.7',
    keys: MEM_ROLES,
    args: { pfn: Int, gen: Int, rec: Str, owner: Str },
    reply: oneOf(tagged('OK', { order: Int }), tagged('STALE'), tagged('GONE')),
    lua:
      HELPERS +
      `
if ARGV[3] ~= '' then
  local t = redis.call('HGET', KEYS[5], 'u:' .. ARGV[3])
  local pre = '0|' .. ARGV[4] .. '|split|'
  if not t or string.sub(t, 1, #pre) ~= pre then return {'GONE'} end
  redis.call('HDEL', KEYS[5], 'u:' .. ARGV[3])
end
local head, gen = tonumber(ARGV[1]), tonumber(ARGV[2])
local live = frame_live(KEYS, head, gen)
local fl, o, ref, map = frame_get(KEYS, head, 'flags', 'reserved', 'ref', 'map')
if not live or not flag_set(fl, PG_HEAD) then return {'STALE'} end
local pins = 0
for i = 1, 2 ^ o - 1 do
  local tref = frame_get(KEYS, head + i, 'ref')
  pins = pins + tref
  frame_set(KEYS, head + i, 'ref', tref + map, 'map', map, 'flags', 0, 'reserved', 0)
  lru_activate(KEYS, head + i)
end
frame_set(KEYS, head, 'ref', ref - pins, 'flags', 0, 'reserved', 0)
lru_activate(KEYS, head)
return {'OK', o}
`,
  }),
} as const;

/** A compound page as the scripts name it (re-exported for the store helpers). */
export const HugePage = PfnGen;
export type HugePage = z.infer<typeof HugePage>;
