/**
 * hugetlbfs (mm/hugetlb.c v3.7): the pool of huge pages in {mem}:hugetlb and the huge entries of
 * an address space in {p:<pid>}:hugetlb (keys.ts describes both). A huge page is 2^order frames
 * with consecutive pfns, its head aligned to 2^order: the head carries PG_head and the order in
 * its record's `reserved` u16, the tails PG_tail, for the pool's whole life (prep_new_huge_page:
 * pool pages stay compound). A huge entry is ONE entry per huge page (huge_pte), guarded by
 * mm->page_table_lock (ptl:mm), never by a split PTE lock.
 *
 * The {mem} scripts get KEYS meta frames pool (KEYS[2] is the frame table, so mem/lua.ts's
 * frame helpers read it); the {p:<pid>} ones the keys of one address space.
 */
import { z } from 'zod';
import { Prot } from '@mmlab/protocol';
import {
  Bit,
  Int,
  Ints,
  IntOrNone,
  LeaseValue,
  PfnGen,
  Str,
  Strs,
  oneOf,
  script,
  tagged,
} from '../boundary';
import { LUA_HELPERS } from '../lua';
import { MEM_LUA } from '../mem/lua';
import { PAGE_FLAGS } from '../keys';
import { HUGE_RECORD_LUA, HugeRecordArgs } from '../mem/thp-scripts';

/** The helpers of the pool's scripts: the frame record's (mem/lua.ts) and the pool's. */
const POOL_LUA =
  LUA_HELPERS +
  MEM_LUA +
  `
local PG_HEAD, PG_TAIL = ${PAGE_FLAGS.PG_head}, ${PAGE_FLAGS.PG_tail}
-- the pool hash (keys.ts {mem}:hugetlb): order, nr, free count, and the free heads (LIFO)
local function pool_get(K)
  local m = redis.call('HMGET', K[3], 'order', 'nr_hugepages', 'free_huge_pages', 'free')
  if not m[1] then return nil end
  local free = {}
  for p in string.gmatch(m[4] or '', '%d+') do free[#free + 1] = tonumber(p) end
  return { order = tonumber(m[1]), n = 2 ^ tonumber(m[1]), nr = tonumber(m[2]),
    nfree = tonumber(m[3]), free = free }
end
local function pool_put_free(K, pool)
  redis.call('HSET', K[3], 'free_huge_pages', #pool.free, 'free', table.concat(pool.free, ' '))
end
-- head is the head of a pool page: its flags say PG_head with the pool's order
local function pool_head(K, pool, head)
  if head < 1 or head % pool.n ~= 0 then return false end
  local fl, order = frame_get(K, head, 'flags', 'reserved')
  return math.floor(fl / PG_HEAD) % 2 == 1 and order == pool.order
end
`;

/** The helpers of the address-space side: the shared ones (VMAs, fencing) and the entries'. */
const ENTRY_LUA =
  LUA_HELPERS +
  `
-- A huge entry of {p:<pid>}:hugetlb: field hvpn (the huge page's first vpn) → "pfn:gen:w"
-- (pfn the head, w 1 writable, 0 read-only) → pfn, gen, w | nil (huge_pte_none)
local function huge_get(key, hvpn)
  local v = redis.call('HGET', key, hvpn)
  if not v then return nil end
  return parse_pte(v)
end
-- the entries of [s, e) (hvpn in it), as "hvpn:pfn:gen:w", in hvpn order
local function huge_range(key, s, e)
  local out, hv = {}, {}
  local h = redis.call('HGETALL', key)
  for i = 1, #h, 2 do
    local v = tonumber(h[i])
    if v and v >= s and v < e then hv[#hv + 1] = v end
  end
  table.sort(hv)
  for _, v in ipairs(hv) do out[#out + 1] = v .. ':' .. redis.call('HGET', key, v) end
  return out
end
-- the caller holds page_table_lock (KEYS ptl, ptlmax) as lease value with token
local function ptl_held(ptl, ptlmax, value, token)
  return fenced(ptl, ptlmax, 'ptl:mm', value, tonumber(token))
end
`;

/** "hvpn:pfn:gen:w" entries as a script replies them. */
const Entries = Strs.describe('"hvpn:pfn:gen:w" ...');

export const HUGETLB_SCRIPTS = {
  hugetlbFormat: script({
    doc: `Reserve the hugetlbfs pool once, right after memFormat (hugetlb_hstate_alloc_pages at boot): ARGV nr huge pages of 2^order frames, heads aligned — pfns 2^order .. (nr + 1) * 2^order - 1, the frames below them (1 .. 2^order - 1) put on the free list's chain and the buddy allocator's never-allocated frames starting above the pool (hwm), so the pool's frames are never handed out by alloc_page. Heads get PG_head and the order, tails PG_tail. Idempotent; an error when memory was allocated from already, the pool does not fit, or a pool of another size or order exists. nr = 0 writes nothing. KEYS meta frames pool → nr_hugepages`,
    models:
      'hugetlb_hstate_alloc_pages() → alloc_fresh_huge_page() → prep_new_huge_page(), mm/hugetlb.c v3.7',
    keys: ['meta', 'frames', 'pool'],
    args: { nr: Int.min(0), order: Int.min(1).max(9) },
    reply: Int.describe('nr_hugepages'),
    lua:
      POOL_LUA +
      `
local nr, order = tonumber(ARGV[1]), tonumber(ARGV[2])
local pool = pool_get(KEYS)
if pool then
  if pool.nr ~= nr or pool.order ~= order then
    return redis.error_reply('a hugetlb pool of ' .. pool.nr .. ' pages of order ' .. pool.order ..
      ' exists: flush Redis to start over')
  end
  return pool.nr
end
if nr == 0 then return 0 end
local m = redis.call('HMGET', KEYS[1], 'formatted', 'frames', 'free', 'hwm', 'nr_free')
if m[1] ~= '1' then return redis.error_reply('memory is not formatted') end
if tonumber(m[3] or '0') ~= 0 or tonumber(m[4] or '0') ~= 0 then
  return redis.error_reply('memory was allocated from before the hugetlb pool was reserved')
end
local n = 2 ^ order
local last = n + nr * n - 1
if last > tonumber(m[2]) then
  return redis.error_reply(nr .. ' huge pages of ' .. n .. ' frames do not fit in ' .. m[2] .. ' frames')
end
-- the frames below the first head: a chain 1 → 2 → ... → n-1 (free_push order: LIFO)
local head = 0
for p = n - 1, 1, -1 do frame_set(KEYS, p, 'next', head); head = p end
redis.call('HSET', KEYS[1], 'free', head, 'hwm', last, 'nr_free', tonumber(m[5]) - nr * n)
local free = {}
for i = nr, 1, -1 do
  local h = i * n
  frame_set(KEYS, h, 'flags', PG_HEAD, 'reserved', order)
  for t = h + 1, h + n - 1 do frame_set(KEYS, t, 'flags', PG_TAIL) end
  free[#free + 1] = h
end
redis.call('HSET', KEYS[3], 'order', order, 'base', n, 'nr_hugepages', nr, 'free_huge_pages', nr,
  'free', table.concat(free, ' '))
return nr
`,
  }),
  hugetlbAlloc: script({
    doc: `alloc_huge_page() → dequeue_huge_page_vma(): the head of the pool's free list; every frame of it gets its gen bumped to one value (the huge page's gen, which each subpage's translation names), state used; the head refcount 1 and mapcount 1 (the entry it is allocated for: put back with hugetlbPut if it is not installed), tails 0. Content: clear_huge_page (zero) or, with copyFrom (a head of that gen), copy_user_huge_page: all 2^order words. With a record (rec not ''), the huge record u:<rec> of {mem}:pending (KEYS[4]) is opened in the same step ("0|owner|huge|hugetlb|pid|hvpn|pfn:gen|olds": mem/thp-scripts.ts hugeRecordEnd ends it). KEYS meta frames pool pending; ARGV copyFrom copyGen rec owner pid hvpn olds → {'OK', pfn, gen} | {'ENOMEM'} (the pool is empty: the fault is SIGBUS) | {'STALE'} (copyFrom is not a used head of that gen)`,
    models:
      'alloc_huge_page() → dequeue_huge_page_vma(), with clear_huge_page() / copy_user_huge_page(), mm/hugetlb.c v3.7',
    keys: ['meta', 'frames', 'pool', 'pending'],
    args: { copyFrom: IntOrNone, copyGen: IntOrNone, ...HugeRecordArgs.shape },
    reply: oneOf(tagged('OK', { pfn: Int, gen: Int }), tagged('ENOMEM'), tagged('STALE')),
    lua:
      POOL_LUA +
      HUGE_RECORD_LUA +
      `
local pool = pool_get(KEYS)
if not pool or #pool.free == 0 then return {'ENOMEM'} end
local src = nil
if ARGV[1] ~= '' then
  src = tonumber(ARGV[1])
  local st, g = frame_get(KEYS, src, 'state', 'gen')
  if not pool_head(KEYS, pool, src) or st ~= USED or g ~= tonumber(ARGV[2]) then return {'STALE'} end
end
local head = table.remove(pool.free)
local gen = 0
for p = head, head + pool.n - 1 do gen = math.max(gen, frame_get(KEYS, p, 'gen')) end
gen = gen + 1
for i = 0, pool.n - 1 do
  local v = 0
  if src then v = frame_get(KEYS, src + i, 'data') end
  local c = (i == 0) and 1 or 0
  frame_set(KEYS, head + i, 'gen', gen, 'ref', c, 'map', c, 'state', USED, 'next', 0, 'data', v)
end
pool_put_free(KEYS, pool)
huge_record_open(KEYS[4], 'hugetlb', ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], head, gen)
return {'OK', head, gen}
`,
  }),
  hugetlbGet: script({
    doc: `get_page() + page_dup_rmap() of huge pages (copy_hugetlb_page_range: the child's entry): mapcount and refcount of each head (pfn, gen) + 1. A head that is not a used pool head of that gen is reported, not taken. KEYS meta frames pool → bad pfns`,
    models: 'get_page() + page_dup_rmap(), copy_hugetlb_page_range(), mm/hugetlb.c v3.7',
    keys: ['meta', 'frames', 'pool'],
    args: { pages: z.array(PfnGen) },
    reply: Ints.describe('bad pfns'),
    lua:
      POOL_LUA +
      `
local pool = pool_get(KEYS)
local bad = {}
for i = 1, #ARGV, 2 do
  local pfn, gen = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local st, g = frame_get(KEYS, pfn, 'state', 'gen')
  if not pool or not pool_head(KEYS, pool, pfn) or st ~= USED or g ~= gen then bad[#bad + 1] = pfn
  else frame_add(KEYS, pfn, 'ref', 1, 'map', 1) end
end
return bad
`,
  }),
  hugetlbPut: script({
    doc: `page_remove_rmap() + put_page() of huge pages (an entry gone: unmap, COW, a fault's page not installed): mapcount and refcount of each head (pfn, gen) - 1; one whose refcount reaches 0 goes back to the pool (free_huge_page → enqueue_huge_page): every frame free, counts 0, the head on the free list. batch: a {mem}:once batch id ('' none) — applied once (the put of a dead replica's munmap, finished by another: intent.ts). KEYS meta frames pool once → {freed heads, bad pfns}`,
    models:
      'page_remove_rmap() + put_page() → free_huge_page() → enqueue_huge_page(), mm/hugetlb.c v3.7',
    keys: ['meta', 'frames', 'pool', 'once'],
    args: { batch: Str, pages: z.array(PfnGen) },
    reply: z
      .tuple([Ints, Ints])
      .transform(([freed, bad]) => ({ freed, bad }))
      .describe('{freed heads, bad pfns}'),
    lua:
      POOL_LUA +
      `
if ARGV[1] ~= '' and redis.call('HSETNX', KEYS[4], ARGV[1], 1) == 0 then return {{}, {}} end
local pool = pool_get(KEYS)
local freed, bad = {}, {}
for i = 2, #ARGV, 2 do
  local pfn, gen = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local st, g = frame_get(KEYS, pfn, 'state', 'gen')
  if not pool or not pool_head(KEYS, pool, pfn) or st ~= USED or g ~= gen then
    bad[#bad + 1] = pfn
  else
    local ref, map = frame_add(KEYS, pfn, 'ref', -1, 'map', -1)
    if ref <= 0 then
      for p = pfn, pfn + pool.n - 1 do frame_set(KEYS, p, 'ref', 0, 'map', 0, 'state', FREE, 'next', 0) end
      pool.free[#pool.free + 1] = pfn
      freed[#freed + 1] = pfn
    end
  end
end
if pool then pool_put_free(KEYS, pool) end
return {freed, bad}
`,
  }),
  hugetlbMapcount: script({
    doc: `page_mapcount() of a huge page: the mapcount of head (pfn, gen), -1 when it is not a used head of that gen. KEYS meta frames pool → mapcount`,
    models: 'page_mapcount(), include/linux/mm.h (hugetlb_cow: avoidcopy)',
    keys: ['meta', 'frames', 'pool'],
    args: { pfn: Int, gen: Int },
    reply: Int.describe('mapcount | -1'),
    lua:
      POOL_LUA +
      `
local pool = pool_get(KEYS)
local pfn = tonumber(ARGV[1])
if not pool or not pool_head(KEYS, pool, pfn) then return -1 end
local st, g, map = frame_get(KEYS, pfn, 'state', 'gen', 'map')
if st ~= USED or g ~= tonumber(ARGV[2]) then return -1 end
return map
`,
  }),
  hugetlbMmap: script({
    doc: `do_mmap_pgoff() of a MAP_HUGETLB mapping (hugetlb_file_setup's file, VM_HUGETLB): as mmap, but the start is aligned to the huge page (2^order pages) and the VMA's flags are 'hugetlb' (private) or 'hugetlbshared'. KEYS mm vma semW semR; ARGV pages prot shared order limitVpn → {'OK', startVpn} | {'ESRCH'} | {'BUSY'} | {'ENOMEM'}`,
    models:
      'do_mmap_pgoff() with MAP_HUGETLB → hugetlb_file_setup() / hugetlbfs_file_mmap(), mm/mmap.c, fs/hugetlbfs/inode.c v3.7',
    keys: ['mm', 'vma', 'semW', 'semR'],
    args: { pages: Int.min(1), prot: Prot, shared: Bit, order: Int.min(1).max(9), limitVpn: Int },
    reply: oneOf(
      tagged('OK', { start: Int }),
      tagged('ESRCH'),
      tagged('BUSY', { what: Str }),
      tagged('ENOMEM'),
    ),
    lua:
      LUA_HELPERS +
      `
if redis.call('HGET', KEYS[1], 'state') ~= 'alive' then return {'ESRCH'} end
if redis.call('EXISTS', KEYS[3]) == 1 then return {'BUSY', 'mmap_sem'} end
if live_reader(KEYS[4]) then return {'BUSY', 'mmap_sem'} end
local n = 2 ^ tonumber(ARGV[4])
local start = tonumber(redis.call('HGET', KEYS[1], 'mmapNext'))
start = math.ceil(start / n) * n
local e = start + tonumber(ARGV[1])
if e > tonumber(ARGV[5]) then return {'ENOMEM'} end
redis.call('HSET', KEYS[1], 'mmapNext', e + 1)
local flags = ARGV[3] == '1' and 'hugetlbshared' or 'hugetlb'
redis.call('ZADD', KEYS[2], start, vma_fmt(start, e, ARGV[2], { flags = flags }))
redis.call('HINCRBY', KEYS[1], 'seq', 2)
return {'OK', start}
`,
  }),
  hugetlbLookup: script({
    doc: `hugetlb_fault()'s first look, lease-free like the fault fast path: the VMA of vpn (a hugetlb one that allows the access, else SIGSEGV), then the huge entry at hvpn (huge_ptep_get; one a hugetlb_cow cleared, w = 3, whose holder is gone is put back read-only first). Busy while page_table_lock or, by someone else than mmapSem's holder, mmap_sem for write is held. The agent joins mm_cpumask (it will cache what it gets). KEYS mm vma huge semW ptl cpumask; ARGV vpn hvpn access mmapSem agent → {'NONE', seq} | {'PRESENT', pfn, gen, w, seq} | {'BUSY', what} | {'SIGSEGV'} | {'ESRCH'} | {'NOTHUGE'} (not a hugetlb VMA)`,
    models: 'hugetlb_fault(): huge_pte_offset() + huge_ptep_get(), mm/hugetlb.c v3.7',
    keys: ['mm', 'vma', 'huge', 'semW', 'ptl', 'cpumask'],
    args: {
      vpn: Int,
      hvpn: Int,
      access: z.enum(['read', 'write']),
      mmapSem: z.union([LeaseValue, z.literal('')]),
      agent: Str,
    },
    reply: oneOf(
      tagged('NONE', { seq: Int }),
      tagged('PRESENT', { pfn: Int, gen: Int, w: Int, seq: Int }),
      tagged('BUSY', { what: Str }),
      tagged('SIGSEGV'),
      tagged('ESRCH'),
      tagged('NOTHUGE'),
    ),
    lua:
      ENTRY_LUA +
      `
if redis.call('HGET', KEYS[1], 'state') ~= 'alive' then return {'ESRCH'} end
if sem_w_other(KEYS[4], ARGV[4]) then return {'BUSY', 'mmap_sem'} end
if redis.call('EXISTS', KEYS[5]) == 1 then return {'BUSY', 'ptl'} end
local vma = find_vma(KEYS[2], tonumber(ARGV[1]))
if not vma or vma.prot == 'none' then return {'SIGSEGV'} end
if ARGV[3] == 'write' and vma.prot ~= 'rw' then return {'SIGSEGV'} end
if not vma.hugetlb then return {'NOTHUGE'} end
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq'))
redis.call('SADD', KEYS[6], ARGV[5])
local pfn, gen, w = huge_get(KEYS[3], ARGV[2])
if not pfn then return {'NONE', seq} end
if w == 3 then
  -- a dead (or fenced) hugetlb_cow's cleared entry, page_table_lock free: put back read-only
  redis.call('HSET', KEYS[3], ARGV[2], pfn .. ':' .. gen .. ':0')
  w = 0
end
return {'PRESENT', pfn, gen, w, seq}
`,
  }),
  hugetlbSetEntry: script({
    doc: `A huge entry written under page_table_lock (the caller's lease value and token, fenced): at hvpn, only if it is still expected ('' huge_pte_none, or "pfn:gen:w": pte_same), becomes new ("pfn:gen:w", or '' cleared: huge_ptep_clear_flush without the flush, which the caller sends next). A fault's write (seq ≥ 0) also needs the mm seq unchanged, mmap_sem not write-held by another than mmapSem's holder, the mm alive and a hugetlb VMA still there. new "pfn:gen:3" is hugetlb_cow's huge_ptep_clear_flush: the entry cleared with its old page kept (pte_none to every walker; hugetlbLookup puts it back read-only once page_table_lock is free, if the COW never set its successor). An incarnation fenced off this address space (KEYS fenced: found dead) writes nothing (ESTALE). KEYS mm vma huge semW ptl ptlmax cpumask fenced; ARGV value token hvpn expected new seq mmapSem incarnation → {'OK', cpumask} | {'CHANGED'} (not as expected, or seq moved: look again) | {'SIGSEGV'} | {'ESRCH'} | {'ESTALE'} (the lease is lost)`,
    models:
      'set_huge_pte_at() / huge_ptep_clear_flush() / set_huge_ptep_writable() under mm->page_table_lock, mm/hugetlb.c v3.7',
    keys: ['mm', 'vma', 'huge', 'semW', 'ptl', 'ptlmax', 'cpumask', 'fenced'],
    args: {
      value: LeaseValue,
      token: Int,
      hvpn: Int,
      expected: Str,
      next: Str,
      seq: Int,
      mmapSem: z.union([LeaseValue, z.literal('')]),
      incarnation: Str,
    },
    reply: oneOf(
      tagged('OK', { cpumask: Strs }),
      tagged('CHANGED'),
      tagged('SIGSEGV'),
      tagged('ESRCH'),
      tagged('ESTALE'),
    ),
    lua:
      ENTRY_LUA +
      `
if not ptl_held(KEYS[5], KEYS[6], ARGV[1], ARGV[2]) then return {'ESTALE'} end
if ARGV[8] ~= '' and redis.call('SISMEMBER', KEYS[8], ARGV[8]) == 1 then return {'ESTALE'} end
local seq = tonumber(ARGV[6])
if seq >= 0 then
  if redis.call('HGET', KEYS[1], 'state') ~= 'alive' then return {'ESRCH'} end
  if sem_w_other(KEYS[4], ARGV[7]) then return {'CHANGED'} end
  if tonumber(redis.call('HGET', KEYS[1], 'seq')) ~= seq then return {'CHANGED'} end
  local vma = find_vma(KEYS[2], tonumber(ARGV[3]))
  if not vma or not vma.hugetlb then return {'SIGSEGV'} end
end
local cur = redis.call('HGET', KEYS[3], ARGV[3]) or ''
if cur ~= ARGV[4] then return {'CHANGED'} end
if ARGV[5] == '' then redis.call('HDEL', KEYS[3], ARGV[3])
else
  if not parse_pte(ARGV[5]) then return redis.error_reply('EINVAL huge entry ' .. ARGV[5]) end
  redis.call('HSET', KEYS[3], ARGV[3], ARGV[5])
end
return {'OK', redis.call('SMEMBERS', KEYS[7])}
`,
  }),
  hugetlbEntries: script({
    doc: `The huge entries of [s, e) (a read, no lock: who acts on them takes page_table_lock and checks). KEYS huge; ARGV s e → "hvpn:pfn:gen:w" ...`,
    models: 'huge_pte_offset() over a range (a read)',
    keys: ['huge'],
    args: { s: Int, e: Int },
    reply: Entries,
    lua:
      ENTRY_LUA +
      `
return huge_range(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
`,
  }),
  hugetlbZap: script({
    doc: `__unmap_hugepage_range()'s loop under page_table_lock (the caller's lease, fenced): every huge entry of [s, e) cleared (huge_ptep_get_and_clear); the caller flushes the TLBs, then puts the pages (hugetlbPut). With an incarnation (an operation with an intent record, KEYS[5]), refused unless it still owns the record, and the heads cleared are appended to the record's cleared frames in the same step as "h<pfn>:<gen>" (a pool page: put with hugetlbPut), so that whoever finishes the operation puts them. KEYS huge ptl ptlmax cpumask intent; ARGV value token s e incarnation → {'OK', cpumask, cleared "hvpn:pfn:gen:w" ...} | {'ESTALE'}`,
    models: '__unmap_hugepage_range(): huge_ptep_get_and_clear() per huge page, mm/hugetlb.c v3.7',
    keys: ['huge', 'ptl', 'ptlmax', 'cpumask', 'intent'],
    args: { value: LeaseValue, token: Int, s: Int, e: Int, incarnation: Str },
    reply: oneOf(tagged('OK', { cpumask: Strs, cleared: Entries }), tagged('ESTALE')),
    lua:
      ENTRY_LUA +
      `
if not ptl_held(KEYS[2], KEYS[3], ARGV[1], ARGV[2]) then return {'ESTALE'} end
if ARGV[5] ~= '' and redis.call('HGET', KEYS[5], 'owner') ~= ARGV[5] then return {'ESTALE'} end
local out = huge_range(KEYS[1], tonumber(ARGV[3]), tonumber(ARGV[4]))
local frames = {}
for _, c in ipairs(out) do
  local hv, pfn, gen = string.match(c, '^(%d+):(%d+):(%d+):')
  redis.call('HDEL', KEYS[1], hv)
  frames[#frames + 1] = 'h' .. pfn .. ':' .. gen
end
if ARGV[5] ~= '' and #frames > 0 then
  local prev = redis.call('HGET', KEYS[5], 'cleared') or ''
  if prev ~= '' then prev = prev .. ' ' end
  redis.call('HSET', KEYS[5], 'cleared', prev .. table.concat(frames, ' '))
end
return {'OK', redis.call('SMEMBERS', KEYS[4]), out}
`,
  }),
  hugetlbCopy: script({
    doc: `copy_hugetlb_page_range()'s parent side under its page_table_lock (the caller's lease, fenced): the huge entries of [s, e), write-protected first in a private (cow = 1) mapping (huge_ptep_set_wrprotect), as they now are. KEYS huge ptl ptlmax cpumask; ARGV value token s e cow → {'OK', cpumask, entries} | {'ESTALE'}`,
    models:
      'copy_hugetlb_page_range(): huge_ptep_set_wrprotect() + huge_ptep_get(), mm/hugetlb.c v3.7',
    keys: ['huge', 'ptl', 'ptlmax', 'cpumask'],
    args: { value: LeaseValue, token: Int, s: Int, e: Int, cow: Bit },
    reply: oneOf(tagged('OK', { cpumask: Strs, entries: Entries }), tagged('ESTALE')),
    lua:
      ENTRY_LUA +
      `
if not ptl_held(KEYS[2], KEYS[3], ARGV[1], ARGV[2]) then return {'ESTALE'} end
local out = huge_range(KEYS[1], tonumber(ARGV[3]), tonumber(ARGV[4]))
if ARGV[5] == '1' then
  for i, c in ipairs(out) do
    local hv, pfn, gen = string.match(c, '^(%d+):(%d+):(%d+):%d$')
    redis.call('HSET', KEYS[1], hv, pfn .. ':' .. gen .. ':0')
    out[i] = hv .. ':' .. pfn .. ':' .. gen .. ':0'
  end
end
return {'OK', redis.call('SMEMBERS', KEYS[4]), out}
`,
  }),
  hugetlbForkSet: script({
    doc: `copy_hugetlb_page_range()'s child side: set_huge_pte_at() of each entry in the child, which is still being forked (state 'forking': nobody else touches it). KEYS mm huge; ARGV "hvpn:pfn:gen:w" ... → 1 | 0 (not a child being forked)`,
    models: 'copy_hugetlb_page_range(): set_huge_pte_at(dst), mm/hugetlb.c v3.7',
    keys: ['mm', 'huge'],
    args: { entries: Entries },
    reply: Bit,
    lua:
      ENTRY_LUA +
      `
if redis.call('HGET', KEYS[1], 'state') ~= 'forking' then return 0 end
for _, c in ipairs(ARGV) do
  local hv, rest = string.match(c, '^(%d+):(%d+:%d+:%d)$')
  if not hv then return redis.error_reply('EINVAL huge entry ' .. c) end
  redis.call('HSET', KEYS[2], hv, rest)
end
return 1
`,
  }),
} as const;
