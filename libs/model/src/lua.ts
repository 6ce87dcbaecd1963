/**
 * Lua helpers prepended to the scripts (mem/scripts.ts, mm/scripts.ts).
 *
 * A script that updates page tables without a lease (the fault fast path) first checks that no
 * one holds the PT lock or mmap_sem for write, and then does its one step: Redis runs scripts
 * one at a time, so the script *is* a PT-lock critical section that never spans a network wait.
 * A script that writes under a lease checks the caller's "owner|token" against the lock and the
 * token against the highest one granted (fencing): a holder whose lease was lost is refused.
 */
export const LUA_HELPERS = `
local function find_vma(key, vpn)
  local r = redis.call('ZREVRANGEBYSCORE', key, vpn, '-inf', 'LIMIT', 0, 1)
  if #r == 0 then return nil end
  local s, e, prot, flags = string.match(r[1], '^(%d+):(%d+):(%a+):(%a*)$')
  s = tonumber(s); e = tonumber(e)
  if vpn >= e then return nil end
  return { s = s, e = e, prot = prot, flags = flags }
end
-- w: 1 writable, 0 read-only, 2 PROT_NONE, 3 cleared by a COW in flight (the old page kept)
local function parse_pte(v)
  local pfn, gen, w = string.match(v, '^(%d+):(%d+):(%d)$')
  return tonumber(pfn), tonumber(gen), tonumber(w)
end
-- {mem} scripts (KEYS = MEM_KEYS): put_page()/get_page() of frames. list: {{pfn, gen}, ...} as
-- strings; kind 'map' drops a mapping too, 'ref' a bare reference. A frame found in a PTE is
-- installed: its pending tag ({mem}:pending) goes, and the put of the page its COW replaced,
-- still owed, is added to the list (it is always a mapping). → freed pfns, bad pfns
local function untag(K, pfn, gen, list)
  local t = redis.call('HGET', K[10], pfn)
  if not t then return end
  redis.call('HDEL', K[10], pfn)
  local tg, old = string.match(t, '^(%d+)|[^|]*|[^|]*|[^|]*|(.*)$')
  if tg ~= gen or not old or old == '' then return end
  local op, og = string.match(old, '^(%d+):(%d+)$')
  if op then list[#list + 1] = {op, og, 'map'} end
end
local function put_frames(K, kind, list)
  local freed, bad = {}, {}
  local i = 1
  while i <= #list do
    local pfn, gen = list[i][1], list[i][2]
    local k = list[i][3] or kind
    local st = redis.call('HGET', K[6], pfn)
    if st == 'zero' then
    elseif st ~= 'used' or redis.call('HGET', K[3], pfn) ~= gen then
      bad[#bad + 1] = tonumber(pfn)
    else
      untag(K, pfn, gen, list)
      if k == 'map' then redis.call('HINCRBY', K[5], pfn, -1) end
      local ref = redis.call('HINCRBY', K[4], pfn, -1)
      if ref <= 0 then
        redis.call('HSET', K[4], pfn, 0); redis.call('HSET', K[5], pfn, 0)
        redis.call('HSET', K[6], pfn, 'free')
        redis.call('LPUSH', K[2], pfn)
        freed[#freed + 1] = tonumber(pfn)
      end
    end
    i = i + 1
  end
  return freed, bad
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
