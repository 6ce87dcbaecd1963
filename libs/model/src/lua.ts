/**
 * Lua helpers prepended to the scripts (mem/scripts.ts, mm/scripts.ts). The {mem} scripts' own
 * helpers (the frame record, the free list, put_page/get_page) are in mem/lua.ts.
 *
 * A script that updates page tables without a lease (the fault fast path) first checks that no
 * one holds the PT lock or mmap_sem for write, and then does its one step: Redis runs scripts
 * one at a time, so the script *is* a PT-lock critical section that never spans a network wait.
 * A script that writes under a lease checks the caller's "owner|token" against the lock and the
 * token against the highest one granted (fencing): a holder whose lease was lost is refused.
 */
export const LUA_HELPERS = `
-- A VMA of the :vma zset (keys.ts; vma.ts reads the same): "start:end:prot:flags" (flags '',
-- 'shared', or 'nonlinear': shared, and remapped by remap_file_pages: VM_NONLINEAR; 'hugetlb' or
-- 'hugetlbshared': VM_HUGETLB, private or shared — v.hugetlb, mm/hugetlb-scripts.ts), and for a
-- mapping of a file ":ino:delta" after it, delta = vm_pgoff - vm_start in pages (the file page of
-- vpn is vpn + delta: a split keeps delta, a move changes it). → {s, e, prot, flags, ino, delta, m}
-- (ino nil: anonymous)
local function vma_parse(m)
  local s, e, prot, flags, rest = string.match(m, '^(%d+):(%d+):(%a+):(%a*)(.*)$')
  if not s then error({err = 'corrupt VMA ' .. m}) end
  local v = { s = tonumber(s), e = tonumber(e), prot = prot, flags = flags, delta = 0, m = m,
    shared = flags == 'shared' or flags == 'nonlinear' or flags == 'hugetlbshared',
    hugetlb = flags == 'hugetlb' or flags == 'hugetlbshared' }
  if rest ~= '' then
    local ino, d = string.match(rest, '^:(%d+):(%-?%d+)$')
    if not ino then error({err = 'corrupt VMA ' .. m}) end
    v.ino = tonumber(ino); v.delta = tonumber(d)
  end
  return v
end
-- The member of [s, e) with prot, and v's flags and file (v.delta: its file page at s is s + delta)
local function vma_fmt(s, e, prot, v)
  local m = s .. ':' .. e .. ':' .. prot .. ':' .. v.flags
  if v.ino then m = m .. ':' .. v.ino .. ':' .. v.delta end
  return m
end
-- vma_merge()'s test: b starts where a ends, with the same prot, flags and file at contiguous offsets
local function vma_mergeable(a, b)
  return a.e == b.s and a.prot == b.prot and a.flags == b.flags and a.ino == b.ino and a.delta == b.delta
end
local function find_vma(key, vpn)
  local r = redis.call('ZREVRANGEBYSCORE', key, vpn, '-inf', 'LIMIT', 0, 1)
  if #r == 0 then return nil end
  local v = vma_parse(r[1])
  if vpn >= v.e then return nil end
  return v
end
-- w: 1 writable, 0 read-only, 2 PROT_NONE, 3 cleared by a COW in flight (the old page kept)
local function parse_pte(v)
  local pfn, gen, w = string.match(v, '^(%d+):(%d+):(%d)$')
  return tonumber(pfn), tonumber(gen), tonumber(w)
end
local function pairs_of(argv, from)
  local list = {}
  for i = from, #argv, 2 do list[#list + 1] = {argv[i], argv[i + 1]} end
  return list
end
local function fenced(lockKey, ptlmax, lockName, value, token)
  if redis.call('GET', lockKey) ~= value then return false end
  local max = tonumber(redis.call('HGET', ptlmax, lockName) or '0')
  return token >= max
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- mmap_sem is write-held by someone other than the caller. mine: the caller's own write lease
-- ("owner|token", or ''): a pinned registration (ib_umem_get) faults its pages in while it holds
-- mmap_sem for write, and only its own faults may pass.
local function sem_w_other(semW, mine)
  local w = redis.call('GET', semW)
  return w and w ~= mine
end
-- A reader of mmap_sem whose lease is alive (expired ones are dropped), or nil.
local function live_reader(semR)
  redis.call('ZREMRANGEBYSCORE', semR, '-inf', now_ms() - 1)
  local r = redis.call('ZRANGE', semR, 0, 0)
  return r[1]
end
`;
