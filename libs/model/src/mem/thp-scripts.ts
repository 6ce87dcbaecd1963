/**
 * Physical memory of transparent huge pages ({mem}, keys.ts): allocating a compound page
 * (2^order frames with consecutive pfns, the head aligned to 2^order: PG_head/PG_tail and the
 * order in each record's reserved field) and dissolving one (__split_huge_page_refcount). Its
 * put_page and get_page are the ordinary scripts' (mem/lua.ts compound_head: a tail's pin counts
 * on the tail and its head; the head's last reference frees every frame).
 *
 * Not crash-safe yet: a replica that dies between allocHugePage and the install of the huge entry
 * leaks the compound page (fsck: thp, "leaked"); the small pages' {mem}:pending tags have no
 * counterpart here.
 */
import { z } from 'zod';
import { Int, Ints, PfnGen, oneOf, script, tagged } from '../boundary';
import { MEM_ROLES } from '../keys';
import { LUA_HELPERS } from '../lua';
import { MEM_LUA } from './lua';

const HELPERS = LUA_HELPERS + MEM_LUA;

/** The largest huge page order (MMLAB_HUGE_PAGE_ORDER's bound: 2^9 = a 2 MiB pmd of 4 KiB pages). */
export const MAX_HUGE_ORDER = 9;

export const MEM_THP_SCRIPTS = {
  allocHugePage: script({
    doc: `alloc_hugepage_vma(): the lowest 2^order-aligned block of 2^order free frames of the buddy allocator (pfn 0, the zero page, and hugetlbfs's pool are never in one) becomes a compound page — every frame used, of one gen (one more than the highest gen among them, so no gen goes back), the head PG_head with refcount 1 and mapcount 1 (the huge entry the caller installs), the tails PG_tail with refcount and mapcount 0, the order in every record's reserved field. The block leaves the free list (the chain is relinked without it; frames between the old high-water mark and the block go onto the chain). Content: subpage i is a copy of frame srcs[i] (copy_user_huge_page, or __collapse_huge_page_copy for collapse; 0: zero-filled). On no LRU list (reclaim splits first). Scans the frame table: O(frames). → {'OK', pfn, gen} | {'ENOMEM'} (no such block: the caller falls back to small pages)`,
    models:
      'alloc_hugepage_vma() (__GFP_COMP: prep_compound_page), mm/huge_memory.c + mm/page_alloc.c v3.7',
    keys: MEM_ROLES,
    args: { order: Int.min(1).max(MAX_HUGE_ORDER), srcs: Ints },
    reply: oneOf(tagged('OK', { pfn: Int, gen: Int }), tagged('ENOMEM')),
    lua:
      HELPERS +
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
  local src = tonumber(ARGV[2 + i] or '0') or 0
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
return {'OK', head, gen}
`,
  }),
  splitHugePage: script({
    doc: `__split_huge_page_refcount(): the compound page at head (of gen) becomes 2^order ordinary pages, once every huge entry mapping it was replaced by PTEs (the caller's __split_huge_page_map, in each address space): each frame's mapcount becomes the head's (one PTE per former huge mapping), each tail's refcount its pins plus that mapcount, the head's its own pins plus it; flags and order cleared; every frame joins the active LRU list (lru_add_page_tail). → {'OK', order} | {'STALE'} (head is no compound head of that gen)`,
    models: '__split_huge_page_refcount(), mm/huge_memory.c v3.7',
    keys: MEM_ROLES,
    args: { pfn: Int, gen: Int },
    reply: oneOf(tagged('OK', { order: Int }), tagged('STALE')),
    lua:
      HELPERS +
      `
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
