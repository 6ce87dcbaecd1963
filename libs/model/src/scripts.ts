/**
 * The Lua scripts: every state change of the lab is one of these, atomic in Redis.
 *
 * A script that updates page tables without a lease (the fault fast path) first checks that no
 * one holds the PT lock or mmap_sem for write, and then does its one step: Redis runs scripts
 * one at a time, so the script *is* a PT-lock critical section that never spans a network wait.
 * A script that writes under a lease checks the caller's "owner|token" against the lock and the
 * token against the highest one granted (fencing): a holder whose lease was lost is refused.
 *
 * Each script touches keys of one hash tag only ({mem} or {p:<pid>}); see keys.ts.
 */

const LUA_HELPERS = `
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

export interface ScriptDef {
  keys: number;
  lua: string;
}

const s = (keys: number, body: string): ScriptDef => ({ keys, lua: LUA_HELPERS + body });

/** KEYS for {mem} scripts, in this order: meta free gen ref map state data fenced once. */
export const SCRIPTS = {
  /** Format physical memory once: pfn 0 is the zero page, 1..n are free. Idempotent. */
  memFormat: s(
    10,
    `
if redis.call('HGET', KEYS[1], 'formatted') == '1' then
  return tonumber(redis.call('HGET', KEYS[1], 'frames'))
end
local n = tonumber(ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[10])
redis.call('HSET', KEYS[3], 0, 1); redis.call('HSET', KEYS[4], 0, 1); redis.call('HSET', KEYS[5], 0, 0)
redis.call('HSET', KEYS[6], 0, 'zero'); redis.call('HSET', KEYS[7], 0, 0)
local chunk = 500
for base = 1, n, chunk do
  local last = math.min(n, base + chunk - 1)
  local g, st, pf = {}, {}, {}
  for pfn = base, last do
    g[#g+1] = pfn; g[#g+1] = 0
    st[#st+1] = pfn; st[#st+1] = 'free'
    pf[#pf+1] = pfn
  end
  redis.call('HSET', KEYS[3], unpack(g)); redis.call('HSET', KEYS[4], unpack(g))
  redis.call('HSET', KEYS[5], unpack(g)); redis.call('HSET', KEYS[7], unpack(g))
  redis.call('HSET', KEYS[6], unpack(st))
  redis.call('RPUSH', KEYS[2], unpack(pf))
end
redis.call('HSET', KEYS[1], 'frames', n, 'formatted', 1)
return n
`,
  ),

  /**
   * alloc_page(): pop a free frame, bump its gen, refcount 1, mapcount ARGV[2]; content is a
   * copy of frame ARGV[1] (copy_user_highpage) or zero. ARGV[3]: the pending tag's
   * "incarnation|pid|vpn|old" of a frame a fault allocates ('' none: keys.ts {mem}:pending).
   * → {'OK', pfn, gen} | {'ENOMEM'}
   */
  allocPage: s(
    10,
    `
local pfn = redis.call('LPOP', KEYS[2])
if not pfn then return {'ENOMEM'} end
local gen = redis.call('HINCRBY', KEYS[3], pfn, 1)
redis.call('HSET', KEYS[4], pfn, 1)
redis.call('HSET', KEYS[5], pfn, tonumber(ARGV[2]))
redis.call('HSET', KEYS[6], pfn, 'used')
local v = '0'
if ARGV[1] ~= '' then v = redis.call('HGET', KEYS[7], ARGV[1]) or '0' end
redis.call('HSET', KEYS[7], pfn, v)
if ARGV[3] ~= '' then redis.call('HSET', KEYS[10], pfn, gen .. '|' .. ARGV[3]) end
return {'OK', tonumber(pfn), gen}
`,
  ),

  /**
   * put_page() on each (pfn, gen) of ARGV[4..]: drop a mapping (ARGV[1] = 'map') or a bare
   * reference ('ref'); a frame whose refcount reaches 0 goes back on the free list. The zero
   * page is never freed. A pfn whose gen no longer matches, or that is already free, is a
   * double free: it is reported, not applied. ARGV[1] = 'unpin': a device's pins, all or
   * nothing — one bad pfn and none is applied (the caller's error). ARGV[1] = 'pending': frames
   * a fault allocated and did not install, given back by their owner ARGV[3] — only those whose
   * pending tag still names it (a frame reaped meanwhile as a dead incarnation's is skipped).
   * ARGV[2]: a batch id ('' none) — a batch applied once is not applied again (the put of a dead
   * replica's intent, finished by another). → {freed pfns, bad pfns}
   */
  putPages: s(
    10,
    `
if ARGV[2] ~= '' then
  if redis.call('HSETNX', KEYS[9], ARGV[2], 1) == 0 then return {{}, {}} end
end
local list = pairs_of(ARGV, 4)
if ARGV[1] == 'unpin' then
  local bad = {}
  for _, p in ipairs(list) do
    local st = redis.call('HGET', KEYS[6], p[1])
    if st ~= 'zero' and (st ~= 'used' or redis.call('HGET', KEYS[3], p[1]) ~= p[2]) then
      bad[#bad + 1] = tonumber(p[1])
    end
  end
  if #bad > 0 then return {{}, bad} end
  local freed, b = put_frames(KEYS, 'ref', list)
  return {freed, b}
end
if ARGV[1] == 'pending' then
  local mine = {}
  for _, p in ipairs(list) do
    local t = redis.call('HGET', KEYS[10], p[1])
    if t and string.sub(t, 1, #p[2] + #ARGV[3] + 2) == p[2] .. '|' .. ARGV[3] .. '|' then
      redis.call('HDEL', KEYS[10], p[1])
      mine[#mine + 1] = p
    end
  end
  local freed, b = put_frames(KEYS, 'map', mine)
  return {freed, b}
end
local freed, bad = put_frames(KEYS, ARGV[1], list)
return {freed, bad}
`,
  ),

  /**
   * Frames a fault of incarnation ARGV[1] allocated are installed in PTEs now (do_anonymous_page
   * set_pte_at, or do_wp_page's set_pte_at_notify): their pending tags go, and for a COW the put
   * of the page it replaced (the tag's old) is done in the same step — unless someone who found
   * the frame in a PTE did both already. KEYS MEM_KEYS; ARGV owner (pfn gen)... → {freed pfns}
   */
  pagesInstalled: s(
    10,
    `
local owed = {}
for _, p in ipairs(pairs_of(ARGV, 2)) do
  local t = redis.call('HGET', KEYS[10], p[1])
  if t and string.sub(t, 1, #p[2] + #ARGV[1] + 2) == p[2] .. '|' .. ARGV[1] .. '|' then
    untag(KEYS, p[1], p[2], owed)
  end
end
local freed = put_frames(KEYS, 'map', owed)
return freed
`,
  ),

  /**
   * A pending frame of a dead incarnation ARGV[3] (orphan_ranges.ts): ARGV[4] = 1 when a PTE of
   * its process holds it (found by pendingFence, after which the dead one can install nothing
   * there): the fault happened, so only the COW's owed put of old is done (rolled forward);
   * 0: it was never installed and goes back (rolled back).
   * KEYS MEM_KEYS; ARGV pfn gen owner installed → {'GONE'} | {'FORWARD', freed} | {'BACK', freed}
   */
  pendingReap: s(
    10,
    `
local t = redis.call('HGET', KEYS[10], ARGV[1])
local head = ARGV[2] .. '|' .. ARGV[3] .. '|'
if not t or string.sub(t, 1, #head) ~= head then return {'GONE'} end
if ARGV[4] == '1' then
  local owed = {}
  untag(KEYS, ARGV[1], ARGV[2], owed)
  return {'FORWARD', (put_frames(KEYS, 'map', owed))}
end
redis.call('HDEL', KEYS[10], ARGV[1])
return {'BACK', (put_frames(KEYS, 'map', {{ARGV[1], ARGV[2]}}))}
`,
  ),

  /**
   * fork's get_page of a chunk of the child's frames (batch ARGV[1]), rolled back: if the batch
   * was applied, its references are put; either way it is marked undone, so a get of it that
   * comes later (a stopped replica resuming) is refused.
   * KEYS MEM_KEYS; ARGV batch (pfn gen)... → {'PUT', freed} | {'NOT_APPLIED'} | {'UNDONE'}
   */
  batchUndo: s(
    10,
    `
local v = redis.call('HGET', KEYS[9], ARGV[1])
redis.call('HSET', KEYS[9], ARGV[1], 'undone')
if not v then return {'NOT_APPLIED'} end
if v == 'undone' then return {'UNDONE'} end
return {'PUT', (put_frames(KEYS, 'map', pairs_of(ARGV, 2)))}
`,
  ),

  /**
   * ib_umem_get()'s RLIMIT_MEMLOCK check and mm->pinned_vm update, in one step, under the
   * caller's mmap_sem write lease ARGV[3]: charge ARGV[1] pages to the process's pinned_vm
   * unless that would pass ARGV[2] (the limit).
   * KEYS mm semW → {'OK', pinnedVm} | {'ENOMEM', pinnedVm} | {'ESRCH'} | {'ESTALE'} (lease lost)
   */
  pinnedVmCharge: s(
    2,
    `
if redis.call('HGET', KEYS[1], 'state') ~= 'alive' then return {'ESRCH'} end
if redis.call('GET', KEYS[2]) ~= ARGV[3] then return {'ESTALE'} end
local cur = tonumber(redis.call('HGET', KEYS[1], 'pinnedVm') or '0')
local want = cur + tonumber(ARGV[1])
if want > tonumber(ARGV[2]) then return {'ENOMEM', cur} end
redis.call('HSET', KEYS[1], 'pinnedVm', want)
return {'OK', want}
`,
  ),

  /**
   * ib_umem_release(): mm->pinned_vm -= ARGV[1] (never below 0; a process gone has none).
   * KEYS mm → pinnedVm
   */
  pinnedVmUncharge: s(
    1,
    `
if redis.call('HEXISTS', KEYS[1], 'state') == 0 then return 0 end
local cur = tonumber(redis.call('HGET', KEYS[1], 'pinnedVm') or '0') - tonumber(ARGV[1])
if cur < 0 then cur = 0 end
redis.call('HSET', KEYS[1], 'pinnedVm', cur)
return cur
`,
  ),

  /**
   * A load or store through a translation: the access lands whatever the frame's state (as on
   * hardware); the caller compares the returned gen/state with its translation. An agent that
   * was fenced (its notifier lease expired) is refused.
   * ARGV: pfn, 'read'|'write', value, agent → {'OK', gen, state, value} | {'EFAULT'} | {'FENCED'}
   */
  frameAccess: s(
    10,
    `
if redis.call('SISMEMBER', KEYS[8], ARGV[4]) == 1 then return {'FENCED'} end
local gen = redis.call('HGET', KEYS[3], ARGV[1])
if not gen then return {'EFAULT'} end
if ARGV[2] == 'write' then redis.call('HSET', KEYS[7], ARGV[1], ARGV[3]) end
return {'OK', tonumber(gen), redis.call('HGET', KEYS[6], ARGV[1]), tonumber(redis.call('HGET', KEYS[7], ARGV[1]))}
`,
  ),

  /**
   * get_page() for each (pfn, gen) of ARGV[3..]: a new mapping (ARGV[1] = 'map': fork shares
   * the frame) or a bare reference ('ref': a long-term pin). The zero page is not counted.
   * A pfn whose gen moved on (freed or reused meanwhile) is reported, not taken. A frame found
   * in a PTE is installed: its pending tag goes, with the COW's owed put (put_frames).
   * ARGV[2]: a batch id ('' none): applied once; refused once undone (batchUndo).
   * → {'OK', bad pfns} | {'DONE'} (applied already) | {'UNDONE'}
   */
  getPages: s(
    10,
    `
if ARGV[2] ~= '' then
  local v = redis.call('HGET', KEYS[9], ARGV[2])
  if v == 'undone' then return {'UNDONE'} end
  if v then return {'DONE'} end
  redis.call('HSET', KEYS[9], ARGV[2], 1)
end
local bad, owed = {}, {}
for _, p in ipairs(pairs_of(ARGV, 3)) do
  local pfn, gen = p[1], p[2]
  local st = redis.call('HGET', KEYS[6], pfn)
  if st == 'zero' then
  elseif st ~= 'used' or redis.call('HGET', KEYS[3], pfn) ~= gen then
    bad[#bad + 1] = tonumber(pfn)
  else
    untag(KEYS, pfn, gen, owed)
    redis.call('HINCRBY', KEYS[4], pfn, 1)
    if ARGV[1] == 'map' then redis.call('HINCRBY', KEYS[5], pfn, 1) end
  end
end
put_frames(KEYS, 'map', owed)
return {'OK', bad}
`,
  ),

  /**
   * copy_user_highpage(): ARGV src dst [old]. With old ("pfn:gen" of src), dst is a pending
   * frame that now backs a COW of src: its tag's old is set (the put owed once it is installed).
   */
  copyPage: s(
    10,
    `
redis.call('HSET', KEYS[7], ARGV[2], redis.call('HGET', KEYS[7], ARGV[1]) or '0')
if ARGV[3] and ARGV[3] ~= '' then
  local t = redis.call('HGET', KEYS[10], ARGV[2])
  if t then redis.call('HSET', KEYS[10], ARGV[2], (string.gsub(t, '|[^|]*$', '|' .. ARGV[3]))) end
end
return 1
`,
  ),

  /** Frame counts and the free list length. → {frames, free} */
  memInfo: s(
    10,
    `
return {tonumber(redis.call('HGET', KEYS[1], 'frames') or '0'), redis.call('LLEN', KEYS[2])}
`,
  ),

  /** mm_alloc(): KEYS mm; ARGV mmap base vpn. */
  mmCreate: s(
    1,
    `
redis.call('HSET', KEYS[1], 'seq', 0, 'mmapNext', ARGV[1], 'state', 'alive')
return 1
`,
  ),

  /**
   * do_mmap(): mmap_sem write-locked for the duration of the script. Leaves a one-page hole
   * after each mapping so neighbours never merge and an overrun faults.
   * KEYS mm vma semW semR; ARGV pages prot flags limitVpn → {'OK', startVpn} | {'ESRCH'} | {'BUSY'} | {'ENOMEM'}
   */
  mmap: s(
    4,
    `
if redis.call('EXISTS', KEYS[1]) == 0 then return {'ESRCH'} end
if redis.call('HGET', KEYS[1], 'state') ~= 'alive' then return {'ESRCH'} end
if redis.call('EXISTS', KEYS[3]) == 1 then return {'BUSY', 'mmap_sem'} end
if live_reader(KEYS[4]) then return {'BUSY', 'mmap_sem'} end
local start = tonumber(redis.call('HGET', KEYS[1], 'mmapNext'))
local e = start + tonumber(ARGV[1])
if e > tonumber(ARGV[4]) then return {'ENOMEM'} end
redis.call('HSET', KEYS[1], 'mmapNext', e + 1)
redis.call('ZADD', KEYS[2], start, start .. ':' .. e .. ':' .. ARGV[2] .. ':' .. ARGV[3])
redis.call('HINCRBY', KEYS[1], 'seq', 2)
return {'OK', start}
`,
  ),

  /**
   * down_write(&mm->mmap_sem) as a lease: KEYS semW mm fence semR; ARGV owner ttl.
   * Waits for the writer and for every reader whose lease is alive (expired readers are
   * dropped). Bumps mm seq so that in-flight speculative faults retry. An mm that is exiting
   * (or gone) refuses: exit_mmap runs once mm_users is 0, when no task can ask for it.
   * → {'OK', token} | {'BUSY', holder} | {'ESRCH'}
   */
  semWriteLock: s(
    4,
    `
if redis.call('HGET', KEYS[2], 'state') ~= 'alive' then return {'ESRCH'} end
local cur = redis.call('GET', KEYS[1])
if cur then return {'BUSY', cur} end
local reader = live_reader(KEYS[4])
if reader then return {'BUSY', reader} end
local token = redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. token, 'PX', ARGV[2])
redis.call('HINCRBY', KEYS[2], 'seq', 1)
return {'OK', token}
`,
  ),

  /**
   * down_read(&mm->mmap_sem) as a lease: one member "owner|token" of the readers' zset, scored
   * by its expiry (Redis TIME, ms). Readers exclude writers only: faults (which check :sem:w
   * alone) and other readers go on. An exiting (or gone) mm refuses, as semWriteLock.
   * KEYS semW semR mm fence; ARGV owner ttl → {'OK', token} | {'BUSY', writer} | {'ESRCH'}
   */
  semReadLock: s(
    4,
    `
if redis.call('HGET', KEYS[3], 'state') ~= 'alive' then return {'ESRCH'} end
local cur = redis.call('GET', KEYS[1])
if cur then return {'BUSY', cur} end
local token = redis.call('INCR', KEYS[4])
redis.call('ZADD', KEYS[2], now_ms() + tonumber(ARGV[2]), ARGV[1] .. '|' .. token)
return {'OK', token}
`,
  ),

  /** Renew a reader's lease from now. KEYS semR; ARGV "owner|token" ttl → 1 | 0 (expired: dropped) */
  semReadRenew: s(
    1,
    `
local exp = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not exp then return 0 end
local now = now_ms()
if tonumber(exp) < now then redis.call('ZREM', KEYS[1], ARGV[1]); return 0 end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
return 1
`,
  ),

  /** up_read(). KEYS semR; ARGV "owner|token" → 1 | 0 (the lease had expired) */
  semReadUnlock: s(
    1,
    `
local exp = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not exp then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
if tonumber(exp) < now_ms() then return 0 end
return 1
`,
  ),

  /** The readers of mmap_sem whose lease is alive. KEYS semR → {"owner|token", ttlMs, ...} */
  semReaders: s(
    1,
    `
local now = now_ms()
local out = {}
local r = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf', 'WITHSCORES')
for i = 1, #r, 2 do out[#out + 1] = r[i]; out[#out + 1] = tonumber(r[i + 1]) - now end
return out
`,
  ),

  /** up_write(): compare-and-delete, bump seq. KEYS semW mm; ARGV "owner|token" → 1 | 0 (lease lost) */
  semWriteUnlock: s(
    2,
    `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HINCRBY', KEYS[2], 'seq', 1)
return 1
`,
  ),

  /**
   * spin_lock(ptl) as a lease. KEYS ptl ptlmax fence intent; ARGV owner ttl lockName incarnation
   * → {'OK', token} | {'BUSY', holder} | {'FENCED', owner}. With an incarnation, the lock is for
   * a step of the operation whose intent record is KEYS[4]: refused unless that incarnation
   * still owns it (a replica stopped past its lease, whose operation another replica took over).
   */
  ptlLock: s(
    4,
    `
if ARGV[4] ~= '' then
  local o = redis.call('HGET', KEYS[4], 'owner')
  if o ~= ARGV[4] then return {'FENCED', o or ''} end
end
local cur = redis.call('GET', KEYS[1])
if cur then return {'BUSY', cur} end
local token = redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. token, 'PX', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[3], token)
return {'OK', token}
`,
  ),

  /** Compare-and-delete release of any lease. KEYS key; ARGV "owner|token" → 1 | 0 */
  leaseRelease: s(
    1,
    `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
`,
  ),

  /** Compare-and-PEXPIRE renewal, measured from now. KEYS key; ARGV "owner|token" ttl → 1 | 0 */
  leaseRenew: s(
    1,
    `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`,
  ),

  /**
   * Remove [s, e) from the VMA list, splitting VMAs that straddle it; mmap_sem must be held
   * for write by the caller. KEYS vma semW; ARGV "owner|token" s e → {'OK', {s1, e1, s2, e2, ...}} | {'ESTALE'}
   */
  vmaUnmap: s(
    2,
    `
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return {'ESTALE'} end
local s, e = tonumber(ARGV[2]), tonumber(ARGV[3])
local removed = {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', e - 1)) do
  local vs, ve, prot, flags = string.match(m, '^(%d+):(%d+):(%a+):(%a*)$')
  vs = tonumber(vs); ve = tonumber(ve)
  if ve > s then
    redis.call('ZREM', KEYS[1], m)
    if vs < s then redis.call('ZADD', KEYS[1], vs, vs .. ':' .. s .. ':' .. prot .. ':' .. flags) end
    if ve > e then redis.call('ZADD', KEYS[1], e, e .. ':' .. ve .. ':' .. prot .. ':' .. flags) end
    removed[#removed + 1] = math.max(vs, s); removed[#removed + 1] = math.min(ve, e)
  end
end
return {'OK', removed}
`,
  ),

  /**
   * The fault fast path: handle_mm_fault() → do_anonymous_page(), one atomic step.
   * KEYS mm vma pte pmds semW ptl cpumask fenced
   * ARGV vpn access newPfn newGen pmdIndex agent incarnation mmapSem
   * → {'ZERO'|'ANON'|'SPURIOUS'|'WP_SHARED'|'NEED_WP', pfn, gen, w, seq, undone} | {'NEED_PAGE', seq}
   *   | {'BUSY', what} | {'SIGSEGV'} | {'ESRCH'} | {'FENCED'}
   * ANON means the frame in ARGV was installed (consumed); every other answer leaves it unused.
   * A PTE a COW cleared (w = 3) with no PT-lock holder left is a COW that died or lost its
   * lease before set_pte_at: the old read-only PTE is put back (undone = 1) and the fault goes
   * on from there. FENCED: this mm incarnation was found dead here (keys.ts :fenced).
   * mmapSem: the write lease of mmap_sem the faulting caller holds itself ('' none): its own
   * faults pass the write-held check (a pinned registration); everyone else's wait (BUSY).
   * An mm that is exiting refuses (ESRCH): nothing is installed in it after exit began.
   */
  fault: s(
    8,
    `
if redis.call('HGET', KEYS[1], 'state') ~= 'alive' then return {'ESRCH'} end
if redis.call('SISMEMBER', KEYS[8], ARGV[7]) == 1 then return {'FENCED'} end
if sem_w_other(KEYS[5], ARGV[8]) then return {'BUSY', 'mmap_sem'} end
if redis.call('EXISTS', KEYS[6]) == 1 then return {'BUSY', 'ptl'} end
local vpn = tonumber(ARGV[1])
local vma = find_vma(KEYS[2], vpn)
if not vma or vma.prot == 'none' then return {'SIGSEGV'} end
local write = ARGV[2] == 'write'
if write and vma.prot ~= 'rw' then return {'SIGSEGV'} end
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq'))
local pte = redis.call('HGET', KEYS[3], ARGV[1])
if not pte then
  if not write and vma.flags ~= 'shared' then
    redis.call('HSET', KEYS[3], ARGV[1], '0:1:0')
    redis.call('SADD', KEYS[4], ARGV[5]); redis.call('SADD', KEYS[7], ARGV[6])
    return {'ZERO', 0, 1, 0, seq}
  end
  if ARGV[3] == '' then return {'NEED_PAGE', seq} end
  local w = 0
  if write then w = 1 end
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[3] .. ':' .. ARGV[4] .. ':' .. w)
  redis.call('SADD', KEYS[4], ARGV[5]); redis.call('SADD', KEYS[7], ARGV[6])
  return {'ANON', tonumber(ARGV[3]), tonumber(ARGV[4]), w, seq}
end
local pfn, gen, w = parse_pte(pte)
local undone = 0
if w == 2 or w == 3 then
  -- a PROT_NONE PTE in a VMA that allows the access again, or a dead COW's cleared PTE (the
  -- PT lock is free: its holder is gone): make it read-only present
  redis.call('HSET', KEYS[3], ARGV[1], pfn .. ':' .. gen .. ':0')
  if w == 3 then undone = 1 end
  w = 0
end
if (not write) or w == 1 then
  redis.call('SADD', KEYS[7], ARGV[6])
  return {'SPURIOUS', pfn, gen, w, seq, undone}
end
if vma.flags == 'shared' then
  -- wp_page_shared(): a shared page is made writable in place, never copied
  redis.call('HSET', KEYS[3], ARGV[1], pfn .. ':' .. gen .. ':1')
  redis.call('SADD', KEYS[7], ARGV[6])
  return {'WP_SHARED', pfn, gen, 1, seq, undone}
end
return {'NEED_WP', pfn, gen, w, seq, undone}
`,
  ),

  /**
   * do_wp_page() reuse: the page is exclusively ours, make the PTE writable in place
   * (no shootdown: a permission upgrade leaves other TLB entries coherent).
   * KEYS mm pte semW ptl cpumask; ARGV vpn expectedPte seq agent mmapSem (as fault's)
   * → {'OK'} | {'RETRY'} | {'BUSY', what}
   */
  wpReuse: s(
    5,
    `
if sem_w_other(KEYS[3], ARGV[5]) then return {'BUSY', 'mmap_sem'} end
if redis.call('HGET', KEYS[1], 'seq') ~= ARGV[3] then return {'RETRY'} end
if redis.call('EXISTS', KEYS[4]) == 1 then return {'BUSY', 'ptl'} end
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return {'RETRY'} end
local pfn, gen = parse_pte(ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], pfn .. ':' .. gen .. ':1')
redis.call('SADD', KEYS[5], ARGV[4])
return {'OK'}
`,
  ),

  /**
   * do_wp_page() copy, first half: take the PT lock as a lease, check pte_same, and clear the
   * PTE (ptep_clear_flush without the flush: the caller shoots down TLBs next, still holding
   * the lock, then installs the new PTE with setPteUnlock). Clearing before setting means no
   * CPU can see the old and the new page at once (Documentation/mm/mmu_notifier.rst, case B).
   * The cleared PTE keeps the old page as w = 3 (keys.ts :pte): pte_none to every walker, and
   * put back read-only by the next fault if this COW never sets its new PTE.
   * KEYS mm pte semW ptl ptlmax fence cpumask fenced
   * ARGV vpn expectedPte seq owner ttl lockName agent incarnation mmapSem (as fault's)
   * → {'OK', token, cpumask} | {'RETRY'} | {'BUSY', what} | {'FENCED'}
   */
  wpCopyLock: s(
    8,
    `
if redis.call('SISMEMBER', KEYS[8], ARGV[8]) == 1 then return {'FENCED'} end
if sem_w_other(KEYS[3], ARGV[9]) then return {'BUSY', 'mmap_sem'} end
if redis.call('HGET', KEYS[1], 'seq') ~= ARGV[3] then return {'RETRY'} end
if redis.call('EXISTS', KEYS[4]) == 1 then return {'BUSY', 'ptl'} end
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return {'RETRY'} end
local token = redis.call('INCR', KEYS[6])
redis.call('SET', KEYS[4], ARGV[4] .. '|' .. token, 'PX', ARGV[5])
redis.call('HSET', KEYS[5], ARGV[6], token)
local pfn, gen = parse_pte(ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], pfn .. ':' .. gen .. ':3')
redis.call('SADD', KEYS[7], ARGV[7])
return {'OK', token, redis.call('SMEMBERS', KEYS[7])}
`,
  ),

  /**
   * set_pte_at(), then spin_unlock() unless ARGV[6] = 'keep' (v3.6's set_pte_at_notify sends
   * change_pte after the PTE is set, still under the lock); fenced: refused when the lease was
   * lost. ARGV[7] = 'skip-fence' is the injected fault `skip-fence-check`: the write is accepted
   * whatever the token (and the lock key left alone when it is no longer ours).
   * A fenced incarnation (keys.ts :fenced) is refused whatever the injection.
   * KEYS ptl ptlmax pte fenced; ARGV "owner|token" lockName token vpn pte keep skip incarnation
   * → {'OK', 1} | {'OK', 0} (accepted without the lease: only with skip-fence) | {'ESTALE'}
   */
  setPteUnlock: s(
    4,
    `
if redis.call('SISMEMBER', KEYS[4], ARGV[8]) == 1 then return {'ESTALE'} end
local ok = fenced(KEYS[1], KEYS[2], ARGV[2], ARGV[1], tonumber(ARGV[3]))
if not ok and ARGV[7] ~= 'skip-fence' then return {'ESTALE'} end
redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])
if not ok then return {'OK', 0} end
if ARGV[6] ~= 'keep' then redis.call('DEL', KEYS[1]) end
return {'OK', 1}
`,
  ),

  /**
   * zap_pte_range() under a held PT lock lease: clear the PTEs of [s, e) in one page-table page.
   * With an incarnation (ARGV[6]), the frames cleared are appended to the intent record KEYS[5]
   * in the same step, so that whoever finishes the operation puts them (never lost, never twice).
   * KEYS ptl ptlmax pte cpumask intent; ARGV "owner|token" lockName token s e incarnation
   * → {'OK', {"vpn:pfn:gen:w", ...}, cpumask} | {'ESTALE'}
   */
  zapPteRange: s(
    5,
    `
if not fenced(KEYS[1], KEYS[2], ARGV[2], ARGV[1], tonumber(ARGV[3])) then return {'ESTALE'} end
if ARGV[6] ~= '' and redis.call('HGET', KEYS[5], 'owner') ~= ARGV[6] then return {'ESTALE'} end
local cleared, frames = {}, {}
for vpn = tonumber(ARGV[4]), tonumber(ARGV[5]) - 1 do
  local v = redis.call('HGET', KEYS[3], vpn)
  if v then
    redis.call('HDEL', KEYS[3], vpn)
    cleared[#cleared + 1] = vpn .. ':' .. v
    local pfn, gen = parse_pte(v)
    if pfn ~= 0 then frames[#frames + 1] = pfn .. ':' .. gen end
  end
end
if ARGV[6] ~= '' and #frames > 0 then
  local prev = redis.call('HGET', KEYS[5], 'cleared') or ''
  if prev ~= '' then prev = prev .. ' ' end
  redis.call('HSET', KEYS[5], 'cleared', prev .. table.concat(frames, ' '))
end
return {'OK', cleared, redis.call('SMEMBERS', KEYS[4])}
`,
  ),

  /**
   * mprotect_fixup() on the VMA list: set prot on [s, e), splitting VMAs that straddle it and
   * merging neighbours that end up alike (vma_merge).
   * Every page of [s, e) must be mapped (else ENOMEM, as mprotect answers). mmap_sem write-held.
   * KEYS vma semW; ARGV "owner|token" s e prot → {'OK', changedVmas} | {'ESTALE'} | {'ENOMEM'}
   */
  vmaProtect: s(
    2,
    `
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return {'ESTALE'} end
local s, e, newprot = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', e - 1)
local covered, vmas = s, {}
for _, m in ipairs(members) do
  local vs, ve, prot, flags = string.match(m, '^(%d+):(%d+):(%a+):(%a*)$')
  vs = tonumber(vs); ve = tonumber(ve)
  if ve > s then vmas[#vmas + 1] = {vs, ve, prot, flags, m} end
end
table.sort(vmas, function(a, b) return a[1] < b[1] end)
for _, v in ipairs(vmas) do
  if v[1] > covered then return {'ENOMEM'} end
  covered = math.max(covered, v[2])
end
if covered < e then return {'ENOMEM'} end
for _, v in ipairs(vmas) do
  local vs, ve, prot, flags, m = v[1], v[2], v[3], v[4], v[5]
  redis.call('ZREM', KEYS[1], m)
  if vs < s then redis.call('ZADD', KEYS[1], vs, vs .. ':' .. s .. ':' .. prot .. ':' .. flags) end
  local ms, me = math.max(vs, s), math.min(ve, e)
  redis.call('ZADD', KEYS[1], ms, ms .. ':' .. me .. ':' .. newprot .. ':' .. flags)
  if ve > e then redis.call('ZADD', KEYS[1], e, e .. ':' .. ve .. ':' .. prot .. ':' .. flags) end
end
-- vma_merge(): neighbours that touch and agree on prot and flags become one VMA again
local all = redis.call('ZRANGE', KEYS[1], 0, -1)
local prev = nil
for _, m in ipairs(all) do
  local vs, ve, prot, flags = string.match(m, '^(%d+):(%d+):(%a+):(%a*)$')
  local cur = {tonumber(vs), tonumber(ve), prot, flags, m}
  if prev and prev[2] == cur[1] and prev[3] == cur[3] and prev[4] == cur[4] then
    redis.call('ZREM', KEYS[1], prev[5], cur[5])
    local merged = prev[1] .. ':' .. cur[2] .. ':' .. prot .. ':' .. flags
    redis.call('ZADD', KEYS[1], prev[1], merged)
    cur = {prev[1], cur[2], prot, flags, merged}
  end
  prev = cur
end
return {'OK', #vmas}
`,
  ),

  /**
   * change_pte_range() under a held PT lock lease: PROT_NONE hides present PTEs (w = 2), r
   * write-protects them, rw only un-hides (write access comes back through write faults).
   * KEYS ptl ptlmax pte cpumask; ARGV "owner|token" lockName token s e prot
   * → {'OK', changed, downgraded, cpumask} | {'ESTALE'}
   */
  changePteRange: s(
    4,
    `
if not fenced(KEYS[1], KEYS[2], ARGV[2], ARGV[1], tonumber(ARGV[3])) then return {'ESTALE'} end
local prot = ARGV[6]
local changed, downgraded = 0, 0
for vpn = tonumber(ARGV[4]), tonumber(ARGV[5]) - 1 do
  local v = redis.call('HGET', KEYS[3], vpn)
  if v then
    local pfn, gen, w = parse_pte(v)
    local nw = w
    if prot == 'none' then nw = 2 elseif w == 2 or prot == 'r' then nw = 0 end
    if nw ~= w then
      redis.call('HSET', KEYS[3], vpn, pfn .. ':' .. gen .. ':' .. nw)
      changed = changed + 1
      if nw == 2 or (w == 1 and nw == 0) then downgraded = downgraded + 1 end
    end
  end
end
return {'OK', changed, downgraded, redis.call('SMEMBERS', KEYS[4])}
`,
  ),

  /**
   * move_vma() on the VMA list: [s, s + pages) (inside one VMA) leaves, [n, n + newPages)
   * appears with the same prot and flags at a fresh address. mmap_sem write-held.
   * With an intent (KEYS[4], ARGV[6] its owner), n is recorded there in the same step.
   * KEYS mm vma semW intent; ARGV "owner|token" s pages newPages limitVpn incarnation
   * → {'OK', n} | {'ESTALE'} | {'EFAULT'} | {'ENOMEM'}
   */
  vmaMove: s(
    4,
    `
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return {'ESTALE'} end
local s, pages, newPages = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local vma = find_vma(KEYS[2], s)
if not vma or s + pages > vma.e then return {'EFAULT'} end
local n = tonumber(redis.call('HGET', KEYS[1], 'mmapNext'))
if n + newPages > tonumber(ARGV[5]) then return {'ENOMEM'} end
redis.call('HSET', KEYS[1], 'mmapNext', n + newPages + 1)
redis.call('ZREM', KEYS[2], vma.s .. ':' .. vma.e .. ':' .. vma.prot .. ':' .. vma.flags)
if vma.s < s then redis.call('ZADD', KEYS[2], vma.s, vma.s .. ':' .. s .. ':' .. vma.prot .. ':' .. vma.flags) end
if vma.e > s + pages then redis.call('ZADD', KEYS[2], s + pages, (s + pages) .. ':' .. vma.e .. ':' .. vma.prot .. ':' .. vma.flags) end
redis.call('ZADD', KEYS[2], n, n .. ':' .. (n + newPages) .. ':' .. vma.prot .. ':' .. vma.flags)
if ARGV[6] ~= '' then redis.call('HSET', KEYS[4], 'newVpn', n) end
return {'OK', n}
`,
  ),

  /**
   * move_ptes() under the old range's PT lock lease: PTEs of [s, e) move by delta pages. Refused
   * once the mm is exiting: exit_mmap zaps the page tables that exist, and a move into a table
   * it already zapped would leave a PTE behind it.
   * KEYS ptl ptlmax pte pmds cpumask mm; ARGV "owner|token" lockName token s e delta
   * → {'OK', moved, cpumask} | {'ESTALE'} | {'ESRCH'}
   */
  movePtes: s(
    6,
    `
if not fenced(KEYS[1], KEYS[2], ARGV[2], ARGV[1], tonumber(ARGV[3])) then return {'ESTALE'} end
if redis.call('HGET', KEYS[6], 'state') ~= 'alive' then return {'ESRCH'} end
local delta, moved = tonumber(ARGV[6]), 0
for vpn = tonumber(ARGV[4]), tonumber(ARGV[5]) - 1 do
  local v = redis.call('HGET', KEYS[3], vpn)
  if v then
    redis.call('HDEL', KEYS[3], vpn)
    redis.call('HSET', KEYS[3], vpn + delta, v)
    redis.call('SADD', KEYS[4], math.floor((vpn + delta) / 512))
    moved = moved + 1
  end
end
return {'OK', moved, redis.call('SMEMBERS', KEYS[5])}
`,
  ),

  /**
   * copy_pte_range(), the parent's half, under its PT lock lease: read the PTEs of [s, e) and,
   * for a COW mapping, write-protect the parent's writable ones. A PTE a dead COW cleared (w = 3)
   * is the old page, read-only, for the child. The frames the child will map are recorded as
   * chunk n of fork's intent record (KEYS[5], refused unless owned by ARGV[7]) in the same step.
   * KEYS ptl ptlmax pte cpumask intent; ARGV "owner|token" lockName token s e cow incarnation
   * → {'OK', {"vpn:pfn:gen:w" for the child}, writeProtected, cpumask, n} | {'ESTALE'}
   */
  copyPteRange: s(
    5,
    `
if not fenced(KEYS[1], KEYS[2], ARGV[2], ARGV[1], tonumber(ARGV[3])) then return {'ESTALE'} end
if redis.call('HGET', KEYS[5], 'owner') ~= ARGV[7] then return {'ESTALE'} end
local cow = ARGV[6] == '1'
local out, frames, wp = {}, {}, 0
for vpn = tonumber(ARGV[4]), tonumber(ARGV[5]) - 1 do
  local v = redis.call('HGET', KEYS[3], vpn)
  if v then
    local pfn, gen, w = parse_pte(v)
    if w == 3 then w = 0 end
    if cow and w == 1 then
      redis.call('HSET', KEYS[3], vpn, pfn .. ':' .. gen .. ':0')
      w = 0; wp = wp + 1
    end
    out[#out + 1] = vpn .. ':' .. pfn .. ':' .. gen .. ':' .. w
    if pfn ~= 0 then frames[#frames + 1] = pfn .. ':' .. gen end
  end
end
local n = redis.call('HINCRBY', KEYS[5], 'chunks', 1)
redis.call('HSET', KEYS[5], 'chunk:' .. n, table.concat(frames, ' '))
return {'OK', out, wp, redis.call('SMEMBERS', KEYS[4]), n}
`,
  ),

  /**
   * dup_mm() for the child: a fresh mm with the parent's VMA list, in state 'forking' (every
   * fault and syscall on it: ESRCH) until forkDone; forker: the fork's intent id. A pid that
   * exists already (a tombstone left by forkUndo) is refused.
   * KEYS mm vma; ARGV mmapNext forker member... → 1 | 0
   */
  forkChild: s(
    2,
    `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'seq', 0, 'mmapNext', ARGV[1], 'state', 'forking', 'forker', ARGV[2])
for i = 3, #ARGV do
  local vs = string.match(ARGV[i], '^(%d+):')
  redis.call('ZADD', KEYS[2], tonumber(vs), ARGV[i])
end
return 1
`,
  ),

  /** The fork is complete: its child comes alive. KEYS mm; ARGV forker → 1 | 0 (not its child) */
  forkDone: s(
    1,
    `
if redis.call('HGET', KEYS[1], 'state') ~= 'forking' then return 0 end
if redis.call('HGET', KEYS[1], 'forker') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'alive')
redis.call('HDEL', KEYS[1], 'forker')
return 1
`,
  ),

  /**
   * A fork whose replica died before forkDone is rolled back: its child, if any, becomes a
   * tombstone (state dead: a late setPtes or forkChild of a stopped replica is refused) without
   * VMAs or PTEs. The references its PTEs held are put by batchUndo, chunk by chunk.
   * KEYS mm vma pte pmds; ARGV forker → {'UNDONE'} | {'ALIVE'} (the fork had completed)
   */
  forkUndo: s(
    4,
    `
local st = redis.call('HGET', KEYS[1], 'state')
if st == 'alive' then return {'ALIVE'} end
redis.call('HSET', KEYS[1], 'state', 'dead', 'forker', ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
return {'UNDONE'}
`,
  ),

  /**
   * copy_pte_range(), the child's half, while the child is being forked by forker.
   * KEYS pte pmds mm; ARGV forker "vpn:pfn:gen:w"... → n | -1 (not forking it: refused)
   */
  setPtes: s(
    3,
    `
if redis.call('HGET', KEYS[3], 'state') ~= 'forking' then return -1 end
if redis.call('HGET', KEYS[3], 'forker') ~= ARGV[1] then return -1 end
for i = 2, #ARGV do
  local vpn, rest = string.match(ARGV[i], '^(%d+):(.*)$')
  redis.call('HSET', KEYS[1], vpn, rest)
  redis.call('SADD', KEYS[2], math.floor(tonumber(vpn) / 512))
end
return #ARGV - 1
`,
  ),

  /**
   * exit_mmap()'s beginning (the last mmput): the mm is exiting — from this step on every fault,
   * mmap, mmap_sem acquire, pinned_vm charge and move_ptes on it refuses (ESRCH), and the seq
   * moves so that a do_wp_page between its steps goes back to the top (and finds it exiting).
   * No mmap_sem: nobody else can be in an mm whose mm_users is 0. An mm already exiting (an
   * exit that failed half way) may be exited again.
   * KEYS mm → {'OK', 1 (began) | 0 (was exiting)} | {'ESRCH'}
   */
  mmExitBegin: s(
    1,
    `
local st = redis.call('HGET', KEYS[1], 'state')
if st == 'exiting' then return {'OK', 0} end
if st ~= 'alive' then return {'ESRCH'} end
redis.call('HSET', KEYS[1], 'state', 'exiting')
redis.call('HINCRBY', KEYS[1], 'seq', 2)
return {'OK', 1}
`,
  ),

  /**
   * exit_mmap()'s end (remove_vma, free_pgtables): the mm is dead, its VMAs and page-table pages
   * gone — only once no PTE is left (else AGAIN: zap again).
   * KEYS mm vma pte pmds → {'OK', 1 (ended it) | 0 (was dead)} | {'AGAIN', ptes} | {'ESRCH'}
   */
  mmExit: s(
    4,
    `
local st = redis.call('HGET', KEYS[1], 'state')
if st == 'dead' then return {'OK', 0} end
if st ~= 'exiting' then return {'ESRCH'} end
local n = redis.call('HLEN', KEYS[3])
if n > 0 then return {'AGAIN', n} end
redis.call('HSET', KEYS[1], 'state', 'dead')
redis.call('DEL', KEYS[2], KEYS[4])
return {'OK', 1}
`,
  ),

  /**
   * The hardware page walker: read one PTE, and join mm_cpumask (the CPU may now cache it).
   * A PTE a COW cleared (w = 3) is pte_none to it.
   * KEYS pte cpumask; ARGV vpn agent → "pfn:gen:w" | false
   */
  walk: s(
    2,
    `
redis.call('SADD', KEYS[2], ARGV[2])
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and string.sub(v, -2) == ':3' then return false end
return v
`,
  ),

  /**
   * A pending frame (keys.ts {mem}:pending) of incarnation ARGV[1], found dead: fence that
   * incarnation off this address space (its fault scripts here are refused from now on), then
   * say whether any PTE holds the frame (installed: roll forward; else roll back).
   * KEYS pte fenced; ARGV incarnation pfn gen → 1 | 0
   */
  pendingFence: s(
    2,
    `
redis.call('SADD', KEYS[2], ARGV[1])
local head = ARGV[2] .. ':' .. ARGV[3] .. ':'
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
  if string.sub(v, 1, #head) == head then return 1 end
end
return 0
`,
  ),

  /**
   * Which of the given PT locks (KEYS) is held by owner, if any: a subscriber's check, on
   * receipt of a callback, that the sender is not sleeping on it under a spinlock.
   * ARGV owner → the held key | false
   */
  ptlHeldBy: {
    keys: -1,
    lua: `
local prefix = ARGV[1] .. '|'
for _, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if v and string.sub(v, 1, #prefix) == prefix then return k end
end
return false
`,
  },

  /**
   * The PT-lock and mmap_sem leases of one address space held right now, with what is left of
   * their TTL (meminfo: "no lock left held" at the end of a run). KEYS: the lease keys (one hash
   * tag); ARGV: their lock names, in the same order → {name, "owner|token", pttl, ...}
   */
  heldLocks: {
    keys: -1,
    lua: `
local out = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if v then
    out[#out + 1] = ARGV[i]; out[#out + 1] = v; out[#out + 1] = redis.call('PTTL', k)
  end
end
return out
`,
  },

  /** Leave mm_cpumask (an agent that went away). KEYS cpumask; ARGV agent */
  cpumaskClear: s(
    1,
    `
return redis.call('SREM', KEYS[1], ARGV[1])
`,
  ),
  /**
   * Record an open range invalidation before its invalidate_range_start is sent.
   * KEYS inv invown; ARGV inv record owner → 1 | 0 (inv already recorded: nothing written)
   */
  invOpen: s(
    2,
    `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3] .. '|open')
return 1
`,
  ),

  /**
   * Take the end of an open invalidation: from the incarnation expected to own it, to another
   * (or the same, for the sender's own end); it is 'ending' from then on. Exactly one caller
   * wins per owner change, so the sender and a replica that thinks it dead never both end it.
   * KEYS invown; ARGV inv from to → {'OK', previous state} | {'LOST', owner} | {'GONE'}
   */
  invClaim: s(
    1,
    `
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return {'GONE'} end
local owner, state = string.match(v, '^(.*)|(%a+)$')
if owner ~= ARGV[2] then return {'LOST', owner or v} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3] .. '|ending')
return {'OK', state}
`,
  ),

  /**
   * Forget an invalidation whose invalidate_range_end was acked, if owner still owns it.
   * KEYS inv invown; ARGV inv owner → 1 | 0
   */
  invClose: s(
    2,
    `
local v = redis.call('HGET', KEYS[2], ARGV[1])
if not v or string.match(v, '^(.*)|%a+$') ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
`,
  ),

  /**
   * Record a multi-step operation before its first change. KEYS intents intent; ARGV id owner
   * rec → 1 | 0 (recorded already: nothing written)
   */
  intentOpen: s(
    2,
    `
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[2], 'owner', ARGV[2], 'rec', ARGV[3], 'batch', 0)
redis.call('SADD', KEYS[1], ARGV[1])
return 1
`,
  ),

  /**
   * Take an operation over from the incarnation expected to own it (one winner); from then on
   * the PT locks its old owner asks for it are refused. KEYS intent; ARGV from to
   * → {'OK'} | {'LOST', owner} | {'GONE'}
   */
  intentClaim: s(
    1,
    `
local o = redis.call('HGET', KEYS[1], 'owner')
if not o then return {'GONE'} end
if o ~= ARGV[1] then return {'LOST', o} end
redis.call('HSET', KEYS[1], 'owner', ARGV[2])
return {'OK'}
`,
  ),

  /**
   * The cleared frames of batch ARGV[2] were put: forget them, next batch.
   * KEYS intent; ARGV owner batch → 1 | 0 (not the owner, or another batch)
   */
  intentFlushed: s(
    1,
    `
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'batch') ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], 'cleared')
redis.call('HINCRBY', KEYS[1], 'batch', 1)
return 1
`,
  ),

  /** The operation is over: forget it, if owner still owns it. KEYS intents intent; ARGV id owner → 1 | 0 */
  intentClose: s(
    2,
    `
if redis.call('HGET', KEYS[2], 'owner') ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[1], ARGV[1])
return 1
`,
  ),
} as const satisfies Record<string, ScriptDef>;

export type ScriptName = keyof typeof SCRIPTS;
