/**
 * Lua helpers of the {mem} scripts (mem/scripts.ts), appended to LUA_HELPERS: the accessors of a
 * frame record in the packed frame table {mem}:frames (layout: keys.ts, FRAME_FIELDS), the free
 * list threaded through it, and put_page()/get_page()'s shared steps. Every {mem} script
 * receives KEYS = MEM_KEYS: K[1] meta, K[2] frames, K[3] fenced, K[4] once, K[5] pending,
 * K[6] swap (slots and swap cache), K[7] lru (inactive), K[8] lru:active, K[9] pagecache,
 * K[10] ksm (KSM's stable tree: ksm/lua.ts, spliced in before free_push).
 * Nothing else reads or writes a frame record (mem/frame.ts decodes the table for reads).
 */
import { FRAME_BYTES, FRAME_FIELDS, FRAME_LAYOUT, FRAME_STATE, PAGE_FLAGS } from '../keys';
import { KSM_LUA } from '../ksm/lua';

const fields = Object.entries(FRAME_FIELDS)
  .map(([n, f]) => `${n} = {'${f.type}', ${f.offset * 8}}`)
  .join(', ');

export const MEM_LUA = `
-- The frame table: pfn p's record is FRAME_BYTES bytes at p * FRAME_BYTES (keys.ts).
local FRAME_BITS = ${FRAME_BYTES * 8}
local FRAME_BYTES = ${FRAME_BYTES}
local FRAME_LAYOUT = '${FRAME_LAYOUT}'
local FIELD = { ${fields} }
local FREE, USED, ZERO = ${FRAME_STATE.free}, ${FRAME_STATE.used}, ${FRAME_STATE.zero}
local STATE_NAME = { [FREE] = 'free', [USED] = 'used', [ZERO] = 'zero' }
local function state_name(st)
  return STATE_NAME[st] or ('state ' .. tostring(st))
end
-- A value as BITFIELD reads it: an integer in decimal. redis.call turns a Lua number into text
-- by a float format (%.14g before Redis 6, %.17g in 7.0, the shortest form later), which may
-- drop digits or use an exponent; a data word is any safe integer.
local function int_arg(v)
  if type(v) == 'number' then return string.format('%d', v) end
  return v
end
-- BITFIELD arguments for op (GET, SET, INCRBY) on fields of pfn: a list name[, value], ...
local function frame_ops(pfn, op, list, step)
  local base = tonumber(pfn) * FRAME_BITS
  local args = {}
  for i = 1, #list, step do
    local f = FIELD[list[i]]
    args[#args + 1] = op; args[#args + 1] = f[1]; args[#args + 1] = base + f[2]
    if step == 2 then args[#args + 1] = int_arg(list[i + 1]) end
  end
  return args
end
-- frame_get(K, pfn, 'gen', 'state', ...) → those fields of pfn's record, as numbers. A pfn past
-- the table reads as zeros (a free frame of gen 0); a negative one as nothing (nil). One whose
-- record would lie past the 2^32 bits a BITFIELD offset may name (a pfn from a request, never a
-- frame: unpin's) reads as zeros too, without asking BITFIELD (which would fail the script).
local function frame_get(K, pfn, ...)
  if tonumber(pfn) < 0 then return end
  if (tonumber(pfn) + 1) * FRAME_BITS > 4294967296 then
    local zeros = {}
    for i = 1, select('#', ...) do zeros[i] = 0 end
    return unpack(zeros)
  end
  return unpack(redis.call('BITFIELD_RO', K[2], unpack(frame_ops(pfn, 'GET', {...}, 1))))
end
-- frame_set(K, pfn, 'ref', 0, 'state', FREE, ...): write fields of pfn's record.
local function frame_set(K, pfn, ...)
  redis.call('BITFIELD', K[2], unpack(frame_ops(pfn, 'SET', {...}, 2)))
end
-- frame_add(K, pfn, 'ref', -1, 'map', -1, ...) → the new values (wrapping, never reached)
local function frame_add(K, pfn, ...)
  return unpack(redis.call('BITFIELD', K[2], unpack(frame_ops(pfn, 'INCRBY', {...}, 2))))
end
-- frame_update(K, pfn, {'INCRBY', 'gen', 1}, {'SET', 'data', v}, {'GET', 'state'}, ...): one
-- BITFIELD of mixed steps, in order → its reply (INCRBY: the new value, SET: the old, GET: it)
local function frame_update(K, pfn, ...)
  local args = {}
  for _, step in ipairs({...}) do
    local a = frame_ops(pfn, step[1], {step[2], step[3]}, step[1] == 'GET' and 1 or 2)
    for _, x in ipairs(a) do args[#args + 1] = x end
  end
  return unpack(redis.call('BITFIELD', K[2], unpack(args)))
end
-- pfn is a frame of the table (0..frames): its whole record is inside the string.
local function frame_exists(K, pfn)
  pfn = tonumber(pfn)
  return pfn >= 0 and redis.call('STRLEN', K[2]) >= (pfn + 1) * FRAME_BYTES
end
${KSM_LUA}
-- Models: free_hot_cold_page(), mm/page_alloc.c v3.7 — a hot page goes to the head of the list
-- (list_add), so the next allocation takes it at once. pfn's counts were 0 or are made 0 here.
local function free_push(K, pfn)
  redis.call('ZREM', K[7], pfn); redis.call('ZREM', K[8], pfn)
  ksm_free(K, pfn)
  local m = redis.call('HMGET', K[1], 'free', 'nr_free')
  frame_set(K, pfn, 'ref', 0, 'map', 0, 'state', FREE, 'next', m[1] or '0')
  redis.call('HSET', K[1], 'free', pfn, 'nr_free', (tonumber(m[2]) or 0) + 1)
end
-- Models: buffered_rmqueue(), mm/page_alloc.c v3.7 — the first page of the list
-- (list->next); with the chain empty, the lowest frame never allocated (hwm + 1). → pfn, or
-- nil when memory is exhausted. A frame on the list that is not free is an error (bad_page()).
local function free_pop(K)
  local m = redis.call('HMGET', K[1], 'free', 'hwm', 'frames', 'nr_free')
  local pfn = tonumber(m[1]) or 0
  local nr = (tonumber(m[4]) or 0) - 1
  if pfn ~= 0 then
    local nxt, st = frame_get(K, pfn, 'next', 'state')
    if st ~= FREE or not frame_exists(K, pfn) then
      error({err = 'free list corrupt: pfn ' .. pfn .. ' on it is ' .. state_name(st)})
    end
    redis.call('HSET', K[1], 'free', nxt, 'nr_free', nr)
    return pfn
  end
  local hwm = tonumber(m[2]) or 0
  if hwm >= (tonumber(m[3]) or 0) then return nil end
  pfn = hwm + 1
  if frame_get(K, pfn, 'state') ~= FREE then
    error({err = 'frame table corrupt: pfn ' .. pfn .. ' never allocated is not free'})
  end
  redis.call('HSET', K[1], 'hwm', pfn, 'nr_free', nr)
  return pfn
end
-- An LRU position: when the page was added, in microseconds (Redis TIME, or at: the time a
-- replica's fault installed a batch frame, reported later). The lists are ordered by it, so
-- pages join them in the order they were mapped whichever replica mapped them.
local function lru_when(at)
  if at then return at end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
-- The LRU lists exist only on a machine with swap: without it nothing is ever reclaimed, and
-- an entry of a sorted set costs more than the frame's record (state-footprint)
local function lru_on(K)
  return (tonumber(redis.call('HGET', K[1], 'swap_slots')) or 0) > 0
end
-- lru_cache_add(): pfn at the young end of the inactive list (off the active one)
local function lru_add(K, pfn, at)
  if not lru_on(K) then return end
  redis.call('ZREM', K[8], pfn)
  redis.call('ZADD', K[7], lru_when(at), pfn)
end
-- activate_page(): pfn at the young end of the active list
local function lru_activate(K, pfn, at)
  if not lru_on(K) then return end
  redis.call('ZREM', K[7], pfn)
  redis.call('ZADD', K[8], lru_when(at), pfn)
end
-- A swap slot's record (keys.ts {mem}:swap): gen, count, cpfn, cgen, data (numbers); nil when
-- the slot was never used
local function slot_get(K, slot)
  local r = redis.call('HGET', K[6], 's' .. slot)
  if not r then return nil end
  local g, c, p, pg, d = string.match(r, '^(%d+)|(%d+)|(%d+)|(%d+)|(-?%d+)$')
  if not g then error({err = 'swap slot ' .. slot .. ' corrupt: ' .. r}) end
  return tonumber(g), tonumber(c), tonumber(p), tonumber(pg), tonumber(d)
end
local function slot_set(K, slot, g, c, p, pg, d)
  redis.call('HSET', K[6], 's' .. slot, g .. '|' .. c .. '|' .. p .. '|' .. pg .. '|' .. int_arg(d))
end
-- A slot that just lost its last swap PTE or its cache page: free when it has neither
local function slot_maybe_free(K, slot, c, p)
  if c == 0 and p == 0 then redis.call('HINCRBY', K[1], 'nr_swap_free', 1) end
end
-- Models: get_swap_page(), mm/swapfile.c v3.7 (scan_swap_map from the cluster's next slot):
-- → slot, gen of a free slot, now allocated (count 0, no cache yet) | nil: swap is full
local function slot_alloc(K)
  local m = redis.call('HMGET', K[1], 'swap_slots', 'nr_swap_free', 'swap_next')
  local n, nfree = tonumber(m[1]) or 0, tonumber(m[2]) or 0
  if n == 0 or nfree <= 0 then return nil end
  local at = tonumber(m[3]) or 1
  for i = 0, n - 1 do
    local slot = (at - 1 + i) % n + 1
    local g, c, p, pg, d = slot_get(K, slot)
    if not g or (c == 0 and p == 0) then
      g = (g or 0) + 1
      slot_set(K, slot, g, 0, 0, 0, 0)
      redis.call('HSET', K[1], 'nr_swap_free', nfree - 1, 'swap_next', slot % n + 1)
      return slot, g
    end
  end
  error({err = 'swap map corrupt: nr_swap_free ' .. nfree .. ' but no free slot'})
end
-- The slot whose swap cache page pfn is (nil: not in the swap cache)
local function swapcache_slot(K, pfn)
  return tonumber(redis.call('HGET', K[6], 'p' .. pfn))
end
-- delete_from_swap_cache(): pfn leaves the cache of its slot (the cache's reference is the
-- caller's to put). → the slot, or nil
local function swapcache_del(K, pfn)
  local slot = swapcache_slot(K, pfn)
  if not slot then return nil end
  redis.call('HDEL', K[6], 'p' .. pfn)
  local g, c, p, pg, d = slot_get(K, slot)
  if g and p == tonumber(pfn) then
    slot_set(K, slot, g, c, 0, 0, d)
    slot_maybe_free(K, slot, c, 0)
  end
  return slot
end
-- swap_duplicate() (delta 1: a swap PTE copied, or written by try_to_unmap_one) and swap_free()
-- (-1: one went) of slot at gen → true | false (a stale or unused slot: the caller's bad)
local function swap_count(K, slot, gen, delta)
  local g, c, p, pg, d = slot_get(K, slot)
  if not g or g ~= tonumber(gen) or c + delta < 0 or (c == 0 and p == 0) then return false end
  slot_set(K, slot, g, c + delta, p, pg, d)
  if delta < 0 then slot_maybe_free(K, slot, c + delta, p) end
  return true
end
-- put_page()/get_page() of frames. list: {{pfn, gen}, ...} as strings; kind 'map' drops a
-- mapping too, 'ref' a bare reference. A negative pfn is a swap entry (-slot, slot gen: the
-- "-slot:gen" of mm/lua.ts frame_ref): its swap_free. A frame found in a PTE is installed: its pending tag
-- ({mem}:pending) goes, and the put of the page its COW replaced, still owed, is added to the
-- list (it is always a mapping). → freed pfns, bad pfns
local function untag(K, pfn, gen, list)
  local t = redis.call('HGET', K[5], pfn)
  if not t then return end
  redis.call('HDEL', K[5], pfn)
  local tg, old = string.match(t, '^(%d+)|[^|]*|[^|]*|[^|]*|(.*)$')
  if tonumber(tg) ~= tonumber(gen) or not old or old == '' then return end
  local op, og = string.match(old, '^(-?%d+):(%d+)$')
  if op then list[#list + 1] = {op, og, 'map'} end
end
-- pfn is a used frame of generation gen (else: freed or reused since, or never a frame)
local function frame_live(K, pfn, gen)
  local st, g = frame_get(K, pfn, 'state', 'gen')
  return st == USED and g == tonumber(gen), st
end
-- Compound pages (THP, mm/huge_memory.c v3.7): a head (PG_head) and its tails (PG_tail), the
-- order in each record's reserved field (keys.ts). → the head of pfn's compound page (pfn itself
-- when it is no tail), and whether pfn is a head
local PG_HEAD, PG_TAIL = ${PAGE_FLAGS.PG_head}, ${PAGE_FLAGS.PG_tail}
local function flag_set(fl, bit) return math.floor(fl / bit) % 2 == 1 end
local function compound_head(K, pfn)
  pfn = tonumber(pfn)
  local fl, o = frame_get(K, pfn, 'flags', 'reserved')
  if not fl then return pfn, false end
  if flag_set(fl, PG_TAIL) then return pfn - pfn % (2 ^ o), false end
  return pfn, flag_set(fl, PG_HEAD)
end
-- __free_pages() of a compound page whose last reference went: every frame free (flags cleared),
-- head first. → the pfns freed
local function free_compound(K, head, out)
  local o = frame_get(K, head, 'reserved')
  for p = head + 2 ^ o - 1, head, -1 do
    frame_set(K, p, 'flags', 0, 'reserved', 0)
    free_push(K, p)
    out[#out + 1] = p
  end
end
local function put_frames(K, kind, list)
  local freed, bad = {}, {}
  local i = 1
  while i <= #list do
    local pfn, gen = list[i][1], list[i][2]
    local k = list[i][3] or kind
    local live, st = frame_live(K, pfn, gen)
    if tonumber(pfn) < 0 then
      -- a swap entry that went (zap_pte_range → free_swap_and_cache): swap_free
      if not swap_count(K, -tonumber(pfn), gen, -1) then bad[#bad + 1] = tonumber(pfn) end
    elseif st == ZERO then
    elseif not live then
      bad[#bad + 1] = tonumber(pfn)
    else
      untag(K, pfn, gen, list)
      local head, compound = compound_head(K, pfn)
      if head ~= tonumber(pfn) then
        -- a pin of a tail page goes (put_compound_page, v3.7 tail refcounting): off the tail's
        -- count and its head's
        frame_add(K, pfn, 'ref', -1)
        pfn, k, compound = head, 'ref', true
      end
      local ref, map
      if k == 'map' then ref, map = frame_add(K, pfn, 'ref', -1, 'map', -1)
      else ref = frame_add(K, pfn, 'ref', -1) end
      if map == 0 then
        -- free_swap_cache() (free_pages_and_swap_cache, v3.7): a page no PTE maps any more
        -- leaves the swap cache when no swap PTE names its slot either (try_to_free_swap)
        local slot = swapcache_slot(K, pfn)
        if slot then
          local g, c = slot_get(K, slot)
          if c == 0 then
            swapcache_del(K, pfn)
            ref = frame_add(K, pfn, 'ref', -1)
          end
        end
      end
      if ref <= 0 and compound then
        free_compound(K, pfn, freed)
      elseif ref <= 0 then
        free_push(K, pfn)
        freed[#freed + 1] = tonumber(pfn)
      end
    end
    i = i + 1
  end
  return freed, bad
end
-- The files and their page caches (keys.ts {mem}:pagecache, K[9]).
-- A file: its size in pages and whether it is XIP → pages, xip | nil (no such file)
local function file_get(K, ino)
  local r = redis.call('HGET', K[9], 'f' .. ino)
  if not r then return nil end
  local n, x = string.match(r, '^(%d+)|([01])$')
  if not n then error({err = 'file ' .. ino .. ' corrupt: ' .. r}) end
  return tonumber(n), x == '1'
end
-- The page cache entry of frame pfn (page->mapping, page->index, PG_dirty) → ino, i, dirty, xip
-- | nil. xip: the frame is a block of an XIP file (its backing store's memory: never dirty)
local function pagecache_of(K, pfn)
  local r = redis.call('HGET', K[9], 'p' .. pfn)
  if not r then return nil end
  local ino, i, d = string.match(r, '^(%d+):(%d+):([01x])$')
  if not ino then error({err = 'page cache corrupt: pfn ' .. pfn .. ' is ' .. r}) end
  return tonumber(ino), tonumber(i), d == '1', d == 'x'
end
local function pagecache_mark(K, pfn, ino, i, dirty)
  redis.call('HSET', K[9], 'p' .. pfn, ino .. ':' .. i .. ':' .. (dirty and '1' or '0'))
end
-- Page 'page' of file ino (ARGV strings) → i, xip | nil and the answer for a file that does not
-- exist ('ENOENT') or a page past its end (past: 'EINVAL' for read/write, 'SIGBUS' for a fault)
local function file_page(K, ino, page, past)
  local pages, xip = file_get(K, ino)
  if not pages then return nil, 'ENOENT' end
  local i = tonumber(page)
  if i >= pages then return nil, past end
  return i, xip
end
-- A shmem file (shmem_zero_setup's object behind MAP_SHARED|MAP_ANONYMOUS): no backing store,
-- its pages go to swap (shmem_writepage) and its page-cache entries may be swap entries
local function file_shmem(K, ino)
  return redis.call('HEXISTS', K[9], 'm' .. ino) == 1
end
-- The swap entry a shmem file's page-cache entry holds instead of a frame (a radix-tree
-- exceptional entry: swp_to_radix_entry) → slot, gen | nil
local function pagecache_swap(K, ino, i)
  local e = redis.call('HGET', K[9], 'c' .. ino .. ':' .. i)
  if not e then return nil end
  local slot, g = string.match(e, '^s(%d+):(%d+)$')
  if not slot then return nil end
  return tonumber(slot), tonumber(g)
end
-- find_get_page(): the frame caching page i of ino → pfn, gen | nil (not cached, or swapped out)
local function pagecache_find(K, ino, i)
  local e = redis.call('HGET', K[9], 'c' .. ino .. ':' .. i)
  if not e or string.sub(e, 1, 1) == 's' then return nil end
  local pfn = tonumber(e)
  if not pfn then error({err = 'page cache corrupt: page ' .. ino .. ':' .. i .. ' is ' .. e}) end
  local gen, st = frame_get(K, pfn, 'gen', 'state')
  if st ~= USED then error({err = 'page cache corrupt: page ' .. ino .. ':' .. i .. ' in pfn ' .. pfn .. ', ' .. state_name(st)}) end
  return pfn, gen
end
-- The word page i of ino holds on the backing store (a hole reads 0)
local function file_disk(K, ino, i)
  return tonumber(redis.call('HGET', K[9], 'd' .. ino .. ':' .. i) or '0')
end
-- Models: find_or_create_page() + add_to_page_cache_lru() + mapping->a_ops->readpage(),
-- mm/filemap.c v3.7: the cached frame of page i, else a fresh frame read from the backing store
-- and added to the page cache (its reference: refcount 1) and the inactive LRU list (a new file
-- page starts there: lru_cache_add_file). → pfn, gen, cached (1: it was) | nil: no free frame
local function pagecache_get(K, ino, i)
  local pfn, gen = pagecache_find(K, ino, i)
  if pfn then return pfn, gen, 1 end
  -- shmem_getpage_gfp(): a shmem page that was swapped out is read back from its slot, and
  -- the slot freed (the page cache holds the page again, dirty: it has no other copy)
  local slot, sg = pagecache_swap(K, ino, i)
  local data = file_disk(K, ino, i)
  if slot then
    local g, c, p, pg, d = slot_get(K, slot)
    if not g or g ~= sg then error({err = 'shmem page ' .. ino .. ':' .. i .. ' names a stale swap slot ' .. slot}) end
    data = d
  end
  pfn = free_pop(K)
  if not pfn then return nil end
  gen = frame_update(K, pfn, {'INCRBY', 'gen', 1}, {'SET', 'ref', 1}, {'SET', 'map', 0},
    {'SET', 'state', USED}, {'SET', 'next', 0}, {'SET', 'data', int_arg(data)})
  if slot then swap_count(K, slot, sg, -1) end
  redis.call('HSET', K[9], 'c' .. ino .. ':' .. i, pfn)
  pagecache_mark(K, pfn, ino, i, slot ~= nil)
  lru_add(K, pfn)
  return pfn, gen, 0
end
-- __delete_from_page_cache(): pfn leaves the page cache (the cache's reference is the caller's
-- to put)
local function pagecache_del(K, pfn)
  local ino, i = pagecache_of(K, pfn)
  if not ino then return end
  redis.call('HDEL', K[9], 'p' .. pfn, 'c' .. ino .. ':' .. i)
end
-- XIP files (mm/filemap_xip.c v3.7; keys.ts {mem}:pagecache): a block of an XIP file is a
-- frame owned by the file for its whole life (c<ino>:<i> → pfn, p<pfn> "ino:i:x"), never in the
-- dirty/writeback path, never reclaimed, on no LRU list. → pfn, gen | nil (a hole)
local function xip_block(K, ino, i)
  return pagecache_find(K, ino, i)
end
-- Models: get_xip_mem(create = 1) (e.g. ext2_get_xip_mem → ext2_get_block(create), a new block
-- cleared): the block of page i of XIP file ino, allocated zero-filled from the free list when
-- it is a hole, with the file's reference. → pfn, gen, new (1: allocated now) | nil: no frame
local function xip_block_create(K, ino, i)
  local pfn, gen = xip_block(K, ino, i)
  if pfn then return pfn, gen, 0 end
  pfn = free_pop(K)
  if not pfn then return nil end
  gen = frame_update(K, pfn, {'INCRBY', 'gen', 1}, {'SET', 'ref', 1}, {'SET', 'map', 0},
    {'SET', 'state', USED}, {'SET', 'next', 0}, {'SET', 'data', 0})
  redis.call('HSET', K[9], 'c' .. ino .. ':' .. i, pfn, 'p' .. pfn, ino .. ':' .. i .. ':x')
  return pfn, gen, 1
end
-- __xip_sparse_page: the one zero-filled frame every hole of every XIP file is mapped read-only
-- to → pfn, gen | nil (never allocated yet)
local function xip_sparse(K)
  local pfn = tonumber(redis.call('HGET', K[9], 'sparse'))
  if not pfn then return nil end
  return pfn, frame_get(K, pfn, 'gen')
end
-- Models: xip_sparse_page(), mm/filemap_xip.c v3.7 — allocated zero-filled on first use, held
-- by the pointer for good (its refcount: 1 + its mappings), on no LRU list. → pfn, gen, new | nil
local function xip_sparse_get(K)
  local pfn, gen = xip_sparse(K)
  if pfn then return pfn, gen, 0 end
  pfn = free_pop(K)
  if not pfn then return nil end
  gen = frame_update(K, pfn, {'INCRBY', 'gen', 1}, {'SET', 'ref', 1}, {'SET', 'map', 0},
    {'SET', 'state', USED}, {'SET', 'next', 0}, {'SET', 'data', 0})
  redis.call('HSET', K[9], 'sparse', pfn)
  return pfn, gen, 1
end
`;
