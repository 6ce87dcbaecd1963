/**
 * An address space ({p:<pid>}, keys.ts): the scripts of mm_struct, its VMAs, page tables, PT
 * locks and mmap_sem as leases, open range invalidations and intent records. Each call names the
 * keys of one address space (procKeys) by role and touches that one slot only.
 */
import { z } from 'zod';
import { Access, Prot } from '@mmlab/protocol';
import {
  Bit,
  Int,
  Ints,
  LeaseValue,
  Str,
  Strs,
  oneOf,
  pairsOf,
  script,
  tagged,
  triplesOf,
} from '../boundary';
import { LUA_HELPERS } from '../lua';
import { PTE_FIELD_MAX, PTE_LUA } from './lua';
import { THP_LUA } from './thp-lua';

/** The helpers of a script that reads or writes PTEs: the shared ones, and the page tables' (mm/lua.ts). */
const PT_LUA = LUA_HELPERS + PTE_LUA;

/** A pfn or gen as a PTE holds it (mm/lua.ts: u32): a bigger one is refused (EINVAL) before Redis. */
const PteField = Int.min(0).max(PTE_FIELD_MAX);
/** "...:pfn:gen:w" whose pfn and gen fit a PTE */
const fitsPte = (v: string): boolean =>
  v
    .split(':')
    .slice(-3, -1)
    .every((x) => Number(x) <= PTE_FIELD_MAX);
/** A PTE as a script takes it: "pfn:gen:w" (formatPte), pfn and gen within PteField. */
const PteText = z
  .string()
  .regex(/^\d+:\d+:[0-4]$/)
  .refine(fitsPte, 'pfn and gen must fit a PTE (u32)')
  .describe('"pfn:gen:w"');
/** A PTE and where: "vpn:pfn:gen:w". */
const VpnPteText = z
  .string()
  .regex(/^\d+:\d+:\d+:[0-4]$/)
  .refine(fitsPte, 'pfn and gen must fit a PTE (u32)')
  .describe('"vpn:pfn:gen:w"');

export const MM_SCRIPTS = {
  pinnedVmCharge: script({
    doc: `ib_umem_get()'s RLIMIT_MEMLOCK check and mm->pinned_vm update, in one step, under the caller's mmap_sem write lease ARGV[3]: charge ARGV[1] pages to the process's pinned_vm unless that would pass ARGV[2] (the limit). KEYS mm semW → {'OK', pinnedVm} | {'ENOMEM', pinnedVm} | {'ESRCH'} | {'ESTALE'} (lease lost)`,
    models:
      'ib_umem_get(), drivers/infiniband/core/umem.c: RLIMIT_MEMLOCK check and mm->pinned_vm +=',
    keys: ['mm', 'semW'],
    args: { pages: Int, limit: Int, semValue: LeaseValue },
    reply: oneOf(
      tagged('OK', { pinnedVm: Int }),
      tagged('ENOMEM', { pinnedVm: Int }),
      tagged('ESRCH'),
      tagged('ESTALE'),
    ),
    lua:
      LUA_HELPERS +
      `
if redis.call('HGET', KEYS[1], 'state') ~= 'alive' then return {'ESRCH'} end
if redis.call('GET', KEYS[2]) ~= ARGV[3] then return {'ESTALE'} end
local cur = tonumber(redis.call('HGET', KEYS[1], 'pinnedVm') or '0')
local want = cur + tonumber(ARGV[1])
if want > tonumber(ARGV[2]) then return {'ENOMEM', cur} end
redis.call('HSET', KEYS[1], 'pinnedVm', want)
return {'OK', want}
`,
  }),
  pinnedVmUncharge: script({
    doc: `ib_umem_release(): mm->pinned_vm -= ARGV[1] (never below 0, and at 0 the field is removed: absent means 0; a process gone has none). KEYS mm → pinnedVm`,
    models: 'ib_umem_release(), drivers/infiniband/core/umem.c: mm->pinned_vm -=',
    keys: ['mm'],
    args: { pages: Int },
    reply: Int.describe('pinnedVm'),
    lua:
      LUA_HELPERS +
      `
if redis.call('HEXISTS', KEYS[1], 'state') == 0 then return 0 end
local cur = tonumber(redis.call('HGET', KEYS[1], 'pinnedVm') or '0') - tonumber(ARGV[1])
-- back to none: the field goes, as before the first charge (a refused reg_mr that charged and
-- uncharged leaves the process as it found it)
if cur <= 0 then
  redis.call('HDEL', KEYS[1], 'pinnedVm')
  return 0
end
redis.call('HSET', KEYS[1], 'pinnedVm', cur)
return cur
`,
  }),
  mmCreate: script({
    doc: `mm_alloc(): KEYS mm; ARGV mmap base vpn.`,
    models: 'mm_alloc(), kernel/fork.c',
    keys: ['mm'],
    args: { mmapBase: Int },
    reply: z.literal(1).describe('1'),
    lua:
      LUA_HELPERS +
      `
redis.call('HSET', KEYS[1], 'seq', 0, 'mmapNext', ARGV[1], 'state', 'alive')
return 1
`,
  }),
  mmap: script({
    doc: `do_mmap(): mmap_sem write-locked for the duration of the script. Leaves a one-page hole after each mapping so neighbours never merge and an overrun faults. A mapping of a file names its inode and the file page it starts at (vm_file, vm_pgoff; ino '' anonymous). KEYS mm vma semW semR; ARGV pages prot flags limitVpn ino pgoff → {'OK', startVpn} | {'ESRCH'} | {'BUSY'} | {'ENOMEM'}`,
    models: 'do_mmap_pgoff(), mm/mmap.c v3.7 (under mmap_sem for write)',
    keys: ['mm', 'vma', 'semW', 'semR'],
    args: {
      pages: Int,
      prot: Prot,
      flags: z.enum(['', 'shared']),
      limitVpn: Int,
      ino: z.union([Int.min(1), z.literal('')]),
      pgoff: Int,
    },
    reply: oneOf(
      tagged('OK', { start: Int }),
      tagged('ESRCH'),
      tagged('BUSY', { what: Str }),
      tagged('ENOMEM'),
    ),
    lua:
      LUA_HELPERS +
      `
if redis.call('EXISTS', KEYS[1]) == 0 then return {'ESRCH'} end
if redis.call('HGET', KEYS[1], 'state') ~= 'alive' then return {'ESRCH'} end
if redis.call('EXISTS', KEYS[3]) == 1 then return {'BUSY', 'mmap_sem'} end
if live_reader(KEYS[4]) then return {'BUSY', 'mmap_sem'} end
local start = tonumber(redis.call('HGET', KEYS[1], 'mmapNext'))
local e = start + tonumber(ARGV[1])
if e > tonumber(ARGV[4]) then return {'ENOMEM'} end
redis.call('HSET', KEYS[1], 'mmapNext', e + 1)
local v = { flags = ARGV[3] }
if ARGV[5] ~= '' then v.ino = tonumber(ARGV[5]); v.delta = tonumber(ARGV[6]) - start end
redis.call('ZADD', KEYS[2], start, vma_fmt(start, e, ARGV[2], v))
redis.call('HINCRBY', KEYS[1], 'seq', 2)
return {'OK', start}
`,
  }),
  semWriteLock: script({
    doc: `down_write(&mm->mmap_sem) as a lease: KEYS semW mm fence semR; ARGV owner ttl. Waits for the writer and for every reader whose lease is alive (expired readers are dropped). Bumps mm seq so that in-flight speculative faults retry. An mm that is exiting (or gone) refuses: exit_mmap runs once mm_users is 0, when no task can ask for it. → {'OK', token} | {'BUSY', holder} | {'ESRCH'}`,
    models: 'down_write(&mm->mmap_sem), kernel/rwsem.c',
    keys: ['semW', 'mm', 'fence', 'semR'],
    args: { owner: Str, ttlMs: Int },
    reply: oneOf(tagged('OK', { token: Int }), tagged('BUSY', { holder: Str }), tagged('ESRCH')),
    lua:
      LUA_HELPERS +
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
  }),
  semReadLock: script({
    doc: `down_read(&mm->mmap_sem) as a lease: one member "owner|token" of the readers' zset, scored by its expiry (Redis TIME, ms). Readers exclude writers only: faults (which check :sem:w alone) and other readers go on. An exiting (or gone) mm refuses, as semWriteLock. KEYS semW semR mm fence; ARGV owner ttl → {'OK', token} | {'BUSY', writer} | {'ESRCH'}`,
    models: 'down_read(&mm->mmap_sem), kernel/rwsem.c',
    keys: ['semW', 'semR', 'mm', 'fence'],
    args: { owner: Str, ttlMs: Int },
    reply: oneOf(tagged('OK', { token: Int }), tagged('BUSY', { holder: Str }), tagged('ESRCH')),
    lua:
      LUA_HELPERS +
      `
if redis.call('HGET', KEYS[3], 'state') ~= 'alive' then return {'ESRCH'} end
local cur = redis.call('GET', KEYS[1])
if cur then return {'BUSY', cur} end
local token = redis.call('INCR', KEYS[4])
redis.call('ZADD', KEYS[2], now_ms() + tonumber(ARGV[2]), ARGV[1] .. '|' .. token)
return {'OK', token}
`,
  }),
  semReadRenew: script({
    doc: `Renew a reader's lease from now. KEYS semR; ARGV "owner|token" ttl → 1 | 0 (expired: dropped)`,
    models: 'none: renewal of a down_read lease',
    keys: ['semR'],
    args: { value: LeaseValue, ttlMs: Int },
    reply: Bit,
    lua:
      LUA_HELPERS +
      `
local exp = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not exp then return 0 end
local now = now_ms()
if tonumber(exp) < now then redis.call('ZREM', KEYS[1], ARGV[1]); return 0 end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
return 1
`,
  }),
  semReadUnlock: script({
    doc: `up_read(). KEYS semR; ARGV "owner|token" → 1 | 0 (the lease had expired)`,
    models: 'up_read(&mm->mmap_sem), kernel/rwsem.c',
    keys: ['semR'],
    args: { value: LeaseValue },
    reply: Bit,
    lua:
      LUA_HELPERS +
      `
local exp = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not exp then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
if tonumber(exp) < now_ms() then return 0 end
return 1
`,
  }),
  semReaders: script({
    doc: `The readers of mmap_sem whose lease is alive. KEYS semR → {"owner|token", ttlMs, ...}`,
    models: 'none: the readers of mmap_sem (diagnostics)',
    keys: ['semR'],
    args: {},
    reply: z
      .array(z.union([Str, Int]))
      .transform((a) =>
        pairsOf(a, (member, ttlMs) => ({ member: String(member), ttlMs: Number(ttlMs) })),
      )
      .describe('[member, ttlMs, ...]'),
    lua:
      LUA_HELPERS +
      `
local now = now_ms()
local out = {}
local r = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf', 'WITHSCORES')
for i = 1, #r, 2 do out[#out + 1] = r[i]; out[#out + 1] = tonumber(r[i + 1]) - now end
return out
`,
  }),
  semWriteUnlock: script({
    doc: `up_write(): compare-and-delete, bump seq. KEYS semW mm; ARGV "owner|token" → 1 | 0 (lease lost)`,
    models: 'up_write(&mm->mmap_sem), kernel/rwsem.c',
    keys: ['semW', 'mm'],
    args: { value: LeaseValue },
    reply: Bit,
    lua:
      LUA_HELPERS +
      `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HINCRBY', KEYS[2], 'seq', 1)
return 1
`,
  }),
  ptlLock: script({
    doc: `spin_lock(ptl) as a lease. KEYS ptl ptlmax fence intent; ARGV owner ttl lockName incarnation → {'OK', token} | {'BUSY', holder} | {'FENCED', owner}. With an incarnation, the lock is for a step of the operation whose intent record is KEYS[4]: refused unless that incarnation still owns it (a replica stopped past its lease, whose operation another replica took over).`,
    models: 'spin_lock(pte_lockptr(mm, pmd)), include/linux/mm.h (or &mm->page_table_lock)',
    keys: ['ptl', 'ptlmax', 'fence', 'intent'],
    args: { owner: Str, ttlMs: Int, lock: Str, incarnation: Str },
    reply: oneOf(
      tagged('OK', { token: Int }),
      tagged('BUSY', { holder: Str }),
      tagged('FENCED', { owner: Str }),
    ),
    lua:
      LUA_HELPERS +
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
  }),
  leaseRelease: script({
    doc: `Compare-and-delete release of any lease. KEYS key; ARGV "owner|token" → 1 | 0`,
    models: 'spin_unlock() / up_write(): compare-and-delete of a lease',
    keys: ['lease'],
    args: { value: LeaseValue },
    reply: Bit,
    lua:
      LUA_HELPERS +
      `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
`,
  }),
  leaseRenew: script({
    doc: `Compare-and-PEXPIRE renewal, measured from now. KEYS key; ARGV "owner|token" ttl → 1 | 0`,
    models: 'none: renewal of a lease (compare-and-PEXPIRE)',
    keys: ['lease'],
    args: { value: LeaseValue, ttlMs: Int },
    reply: Bit,
    lua:
      LUA_HELPERS +
      `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`,
  }),
  vmaUnmap: script({
    doc: `Remove [s, e) from the VMA list, splitting VMAs that straddle it; mmap_sem must be held for write by the caller. KEYS vma semW; ARGV "owner|token" s e → {'OK', {s1, e1, s2, e2, ...}} | {'ESTALE'}`,
    models: 'detach_vmas_to_be_unmapped() with split_vma(), mm/mmap.c',
    keys: ['vma', 'semW'],
    args: { semValue: LeaseValue, start: Int, end: Int },
    reply: oneOf(tagged('OK', { removed: Ints }), tagged('ESTALE')),
    lua:
      LUA_HELPERS +
      `
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return {'ESTALE'} end
local s, e = tonumber(ARGV[2]), tonumber(ARGV[3])
local removed = {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', e - 1)) do
  local v = vma_parse(m)
  local vs, ve = v.s, v.e
  if ve > s then
    redis.call('ZREM', KEYS[1], m)
    if vs < s then redis.call('ZADD', KEYS[1], vs, vma_fmt(vs, s, v.prot, v)) end
    if ve > e then redis.call('ZADD', KEYS[1], e, vma_fmt(e, ve, v.prot, v)) end
    removed[#removed + 1] = math.max(vs, s); removed[#removed + 1] = math.min(ve, e)
  end
end
return {'OK', removed}
`,
  }),
  fault: script({
    doc: `The fault fast path: handle_mm_fault() → do_anonymous_page(), one atomic step. KEYS mm vma pte pmds semW ptl cpumask fenced ARGV vpn access newPfn newGen pmdIndex agent incarnation mmapSem → {'ZERO'|'ANON'|'SPURIOUS'|'WP_SHARED'|'NEED_WP', pfn, gen, w, seq, undone} | {'NEED_PAGE', seq}   | {'BUSY', what} | {'SIGSEGV'} | {'HUGETLB'} (a hugetlb VMA: hugetlb_fault maps it) | {'ESRCH'} | {'FENCED'} ANON means the frame in ARGV was installed (consumed); every other answer leaves it unused. A PTE a COW cleared (w = 3) with no PT-lock holder left is a COW that died or lost its lease before set_pte_at: the old read-only PTE is put back (undone = 1) and the fault goes on from there. FENCED: this mm incarnation was found dead here (keys.ts :fenced). mmapSem: the write lease of mmap_sem the faulting caller holds itself ('' none): its own faults pass the write-held check (a pinned registration); everyone else's wait (BUSY). An mm that is exiting refuses (ESRCH): nothing is installed in it after exit began. batch = 1: the frame is from the incarnation's per-replica batch ({mem}:pending "…|reserve"); installed (ANON), it is recorded in :rsv under the incarnation in the same step. drop: (pfn, gen) of that incarnation's :rsv entries it has reported installed to {mem} since (rmqueueBulk), forgotten here first (once the incarnation passed the fence check). A swap entry (w = 4) answers SWAP (slot, slot gen): the caller reads the page in and calls again with it as newPfn/newGen and the entry as swap ("slot:gen:4"); the page is installed read-only only over that same entry (SWAPIN), else SWAP again or whatever the PTE now is. A pte_none in a mapping of a file — or a file PTE (w = 5) of a nonlinear one, which names its page — answers NEED_FILE (ino, pgoff, cow, seq, wshared — wshared = 1: the VMA is shared and writable, VM_WRITE|VM_SHARED, where xip_file_fault allocates an XIP file's hole): the caller comes back with that page (filePgoff = pgoff: installed only over the same entry) — the file's page-cache page as newPfn/newGen and file = 'page' (installed: FILE, writable for a write to a shared mapping), or for a write to a private mapping (cow = 1) with its own frame holding a copy and file = 'cow' (installed as ANON). WP_SHARED says file = 1 for a file's page (the caller dirties it).`,
    models:
      'handle_mm_fault() → handle_pte_fault() / do_anonymous_page() / do_linear_fault() / do_nonlinear_fault(), mm/memory.c v3.7',
    keys: [
      'mm',
      'vma',
      'pte',
      'pmds',
      'semW',
      'ptl',
      'cpumask',
      'fenced',
      'rsv',
      'pmdhuge',
      'ptlmm',
    ],
    args: {
      vpn: Int,
      access: Access,
      newPfn: z.union([PteField, z.literal('')]),
      newGen: z.union([PteField, z.literal('')]),
      pmd: Int,
      agent: Str,
      incarnation: Str,
      mmapSem: z.union([LeaseValue, z.literal('')]),
      batch: Bit,
      swap: z.union([PteText, z.literal('')]),
      file: z.enum(['', 'page', 'cow']),
      filePgoff: z.union([Int, z.literal('')]),
      /** THP: the huge page order a pte_none anonymous fault may take a huge page of (0: no) */
      thp: Int.min(0),
      drop: z.array(z.object({ pfn: PteField, gen: PteField })),
    },
    reply: oneOf(
      tagged('ZERO', { pfn: Int, gen: Int, w: Int, seq: Int, undone: Bit.optional() }),
      tagged('ANON', { pfn: Int, gen: Int, w: Int, seq: Int, undone: Bit.optional() }),
      tagged('SPURIOUS', { pfn: Int, gen: Int, w: Int, seq: Int, undone: Bit.optional() }),
      tagged('WP_SHARED', {
        pfn: Int,
        gen: Int,
        w: Int,
        seq: Int,
        undone: Bit,
        file: Bit,
      }),
      tagged('NEED_FILE', { ino: Int, pgoff: Int, cow: Bit, seq: Int, wshared: Bit }),
      tagged('FILE', { pfn: Int, gen: Int, w: Int, seq: Int }),
      tagged('NEED_WP', { pfn: Int, gen: Int, w: Int, seq: Int, undone: Bit.optional() }),
      tagged('NEED_PAGE', { seq: Int }),
      tagged('NEED_HUGE', { hvpn: Int, seq: Int }),
      tagged('NEED_HUGE_WP', { pfn: Int, gen: Int, w: Int, seq: Int, hvpn: Int }),
      tagged('SWAP', { pfn: Int, gen: Int, w: Int, seq: Int }),
      tagged('SWAPIN', { pfn: Int, gen: Int, w: Int, seq: Int, undone: Bit.optional() }),
      tagged('BUSY', { what: Str }),
      tagged('SIGSEGV'),
      tagged('HUGETLB'),
      tagged('ESRCH'),
      tagged('FENCED'),
    ),
    lua:
      PT_LUA +
      THP_LUA +
      `
-- :rsv[owner] ("pfn:gen ..."): forget the pairs of argv[from..], then append add (if any)
local function rsv_update(key, owner, argv, from, add)
  local gone = {}
  for i = from, #argv - 1, 2 do gone[argv[i] .. ':' .. argv[i + 1]] = true end
  local keep = {}
  for e in string.gmatch(redis.call('HGET', key, owner) or '', '%S+') do
    if not gone[e] then keep[#keep + 1] = e end
  end
  if add then keep[#keep + 1] = add end
  if #keep == 0 then redis.call('HDEL', key, owner)
  else redis.call('HSET', key, owner, table.concat(keep, ' ')) end
end
if redis.call('HGET', KEYS[1], 'state') ~= 'alive' then return {'ESRCH'} end
if redis.call('SISMEMBER', KEYS[8], ARGV[7]) == 1 then return {'FENCED'} end
if #ARGV >= 14 then rsv_update(KEYS[9], ARGV[7], ARGV, 14, nil) end
if sem_w_other(KEYS[5], ARGV[8]) then return {'BUSY', 'mmap_sem'} end
if redis.call('EXISTS', KEYS[6]) == 1 then return {'BUSY', 'ptl'} end
local vpn = tonumber(ARGV[1])
local vma = find_vma(KEYS[2], vpn)
if not vma or vma.prot == 'none' then return {'SIGSEGV'} end
local write = ARGV[2] == 'write'
if write and vma.prot ~= 'rw' then return {'SIGSEGV'} end
-- is_vm_hugetlb_page(): hugetlb_fault() (apps/mm hugetlb.ts) maps it, by one huge entry
if vma.hugetlb then return {'HUGETLB'} end
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq'))
-- pmd_trans_huge(): a huge entry maps vpn's subpage (head + index); a write to a read-only one
-- is do_huge_pmd_wp_page's (the caller's, NEED_HUGE_WP). One a huge COW, fallback, split or
-- collapse cleared (w = 3) is busy while page_table_lock is held, and put back read-only when
-- its holder is gone (as a dead COW's PTE).
local hv, hp, hg, hw = huge_get(KEYS[10], vpn)
if hv then
  local undone = 0
  if hw == 3 then
    if redis.call('EXISTS', KEYS[11]) == 1 then return {'BUSY', 'ptl'} end
    huge_set(KEYS[10], hv, hp, hg, 0, huge_order(KEYS[10]))
    hw, undone = 0, 1
  end
  redis.call('SADD', KEYS[7], ARGV[6])
  if (not write) or hw == 1 then return {'SPURIOUS', hp + vpn - hv, hg, hw, seq, undone} end
  return {'NEED_HUGE_WP', hp, hg, hw, seq, hv}
end
local pfn, gen, w = pte_get(KEYS[3], vpn)
if pfn and w == PTE_SWAP then
  -- do_swap_page(): the caller reads the page in (swap cache or slot) and comes back with it;
  -- installed only over the same swap entry (pte_same), read-only: a write then takes
  -- do_wp_page, whose reuse rule counts the slot's other swap PTEs
  if ARGV[10] ~= pte_str(pfn, gen, w) or ARGV[3] == '' then return {'SWAP', pfn, gen, w, seq} end
  pte_set(KEYS[3], vpn, tonumber(ARGV[3]), tonumber(ARGV[4]), 0)
  redis.call('SADD', KEYS[7], ARGV[6])
  return {'SWAPIN', tonumber(ARGV[3]), tonumber(ARGV[4]), 0, seq}
end
-- do_nonlinear_fault(): a file PTE says which file page goes here (pte_to_pgoff)
local pgoff = nil
if pfn and w == PTE_FILE then
  if not vma.ino then pte_bad('a file PTE at vpn ' .. vpn .. ' outside a mapping of a file') end
  pgoff = pfn
  pfn = nil
end
if not pfn then
  if vma.ino then
    -- do_linear_fault() → __do_fault(), mm/memory.c v3.7: the page is the file's page-cache
    -- page (the caller gets it, charged as a mapping: filemapFault, and comes back with it as
    -- file = 'page'), mapped writable only for a write to a shared mapping (the caller marked
    -- it dirty first); a write to a private one installs a private copy (the caller's frame,
    -- the file page copied in: file = 'cow') as an anonymous page
    local cow = write and not vma.shared
    local mode = cow and 'cow' or 'page'
    pgoff = pgoff or (vpn + vma.delta)
    if ARGV[11] ~= mode or ARGV[3] == '' or ARGV[12] ~= tostring(pgoff) then
      local wshared = (vma.shared and vma.prot == 'rw') and 1 or 0
      return {'NEED_FILE', vma.ino, pgoff, cow and 1 or 0, seq, wshared}
    end
    if mode == 'page' then
      w = 0
      if write then w = 1 end
      pte_set(KEYS[3], vpn, tonumber(ARGV[3]), tonumber(ARGV[4]), w)
      redis.call('SADD', KEYS[4], ARGV[5]); redis.call('SADD', KEYS[7], ARGV[6])
      return {'FILE', tonumber(ARGV[3]), tonumber(ARGV[4]), w, seq}
    end
  elseif ARGV[13] ~= '0' and not vma.shared and ARGV[3] == '' then
    -- do_huge_pmd_anonymous_page() when the aligned range lies in the VMA and is pmd_none
    -- (no PTE in it): the caller allocates the huge page and installs it (hugePmdInstall)
    local n = 2 ^ tonumber(ARGV[13])
    local h = vpn - vpn % n
    if h >= vma.s and h + n <= vma.e and #pte_range(KEYS[3], h, h + n) == 0 then
      return {'NEED_HUGE', h, seq}
    end
  end
  if not vma.ino and not write and not vma.shared then
    pte_set(KEYS[3], vpn, 0, 1, 0)
    redis.call('SADD', KEYS[4], ARGV[5]); redis.call('SADD', KEYS[7], ARGV[6])
    return {'ZERO', 0, 1, 0, seq}
  end
  if ARGV[3] == '' then return {'NEED_PAGE', seq} end
  w = 0
  if write then w = 1 end
  pte_set(KEYS[3], vpn, tonumber(ARGV[3]), tonumber(ARGV[4]), w)
  redis.call('SADD', KEYS[4], ARGV[5]); redis.call('SADD', KEYS[7], ARGV[6])
  if ARGV[9] == '1' then rsv_update(KEYS[9], ARGV[7], ARGV, #ARGV + 1, ARGV[3] .. ':' .. ARGV[4]) end
  return {'ANON', tonumber(ARGV[3]), tonumber(ARGV[4]), w, seq}
end
local undone = 0
if w == 2 or w == 3 then
  -- a PROT_NONE PTE in a VMA that allows the access again, or a dead COW's cleared PTE (the
  -- PT lock is free: its holder is gone): make it read-only present
  pte_set(KEYS[3], vpn, pfn, gen, 0)
  if w == 3 then undone = 1 end
  w = 0
end
if (not write) or w == 1 then
  redis.call('SADD', KEYS[7], ARGV[6])
  return {'SPURIOUS', pfn, gen, w, seq, undone}
end
if vma.shared then
  -- wp_page_shared(): a shared page is made writable in place, never copied (a file's page is
  -- dirtied by the caller: set_page_dirty_balance)
  pte_set(KEYS[3], vpn, pfn, gen, 1)
  redis.call('SADD', KEYS[7], ARGV[6])
  local file = 0
  if vma.ino then file = 1 end
  return {'WP_SHARED', pfn, gen, 1, seq, undone, file}
end
return {'NEED_WP', pfn, gen, w, seq, undone}
`,
  }),
  wpReuse: script({
    doc: `do_wp_page() reuse: the page is exclusively ours, make the PTE writable in place (no shootdown: a permission upgrade leaves other TLB entries coherent). KEYS mm pte semW ptl cpumask; ARGV vpn expectedPte seq agent mmapSem (as fault's) → {'OK'} | {'RETRY'} | {'BUSY', what}`,
    models: 'do_wp_page(), mm/memory.c: the reuse branch (pte_mkwrite in place)',
    keys: ['mm', 'pte', 'semW', 'ptl', 'cpumask'],
    args: { vpn: Int, expected: PteText, seq: Int, agent: Str, mmapSem: Str },
    reply: oneOf(tagged('OK'), tagged('RETRY'), tagged('BUSY', { what: Str })),
    lua:
      PT_LUA +
      `
if sem_w_other(KEYS[3], ARGV[5]) then return {'BUSY', 'mmap_sem'} end
if redis.call('HGET', KEYS[1], 'seq') ~= ARGV[3] then return {'RETRY'} end
if redis.call('EXISTS', KEYS[4]) == 1 then return {'BUSY', 'ptl'} end
local vpn = tonumber(ARGV[1])
local pfn, gen, w = pte_get(KEYS[2], vpn)
if not pfn or pte_str(pfn, gen, w) ~= ARGV[2] then return {'RETRY'} end
pte_set(KEYS[2], vpn, pfn, gen, 1)
redis.call('SADD', KEYS[5], ARGV[4])
return {'OK'}
`,
  }),
  wpCopyLock: script({
    doc: `do_wp_page() copy, first half: take the PT lock as a lease, check pte_same, and clear the PTE (ptep_clear_flush without the flush: the caller shoots down TLBs next, still holding the lock, then installs the new PTE with setPteUnlock). Clearing before setting means no CPU can see the old and the new page at once (Documentation/mm/mmu_notifier.rst, case B). The cleared PTE keeps the old page as w = 3 (keys.ts :pte): pte_none to every walker, and put back read-only by the next fault if this COW never sets its new PTE. KEYS mm pte semW ptl ptlmax fence cpumask fenced ARGV vpn expectedPte seq owner ttl lockName agent incarnation mmapSem (as fault's) → {'OK', token, cpumask} | {'RETRY'} | {'BUSY', what} | {'FENCED'}`,
    models: 'do_wp_page(), mm/memory.c: gotten: pte_offset_map_lock, pte_same, ptep_clear_flush',
    keys: ['mm', 'pte', 'semW', 'ptl', 'ptlmax', 'fence', 'cpumask', 'fenced'],
    args: {
      vpn: Int,
      expected: PteText,
      seq: Int,
      owner: Str,
      ttlMs: Int,
      lock: Str,
      agent: Str,
      incarnation: Str,
      mmapSem: Str,
    },
    reply: oneOf(
      tagged('OK', { token: Int, cpumask: Strs }),
      tagged('RETRY'),
      tagged('BUSY', { what: Str }),
      tagged('FENCED'),
    ),
    lua:
      PT_LUA +
      `
if redis.call('SISMEMBER', KEYS[8], ARGV[8]) == 1 then return {'FENCED'} end
if sem_w_other(KEYS[3], ARGV[9]) then return {'BUSY', 'mmap_sem'} end
if redis.call('HGET', KEYS[1], 'seq') ~= ARGV[3] then return {'RETRY'} end
if redis.call('EXISTS', KEYS[4]) == 1 then return {'BUSY', 'ptl'} end
local vpn = tonumber(ARGV[1])
local pfn, gen, w = pte_get(KEYS[2], vpn)
if not pfn or pte_str(pfn, gen, w) ~= ARGV[2] then return {'RETRY'} end
local token = redis.call('INCR', KEYS[6])
redis.call('SET', KEYS[4], ARGV[4] .. '|' .. token, 'PX', ARGV[5])
redis.call('HSET', KEYS[5], ARGV[6], token)
pte_set(KEYS[2], vpn, pfn, gen, 3)
redis.call('SADD', KEYS[7], ARGV[7])
return {'OK', token, redis.call('SMEMBERS', KEYS[7])}
`,
  }),
  setPteUnlock: script({
    doc: `set_pte_at(), then spin_unlock() unless ARGV[6] = 'keep' (v3.6's set_pte_at_notify sends change_pte after the PTE is set, still under the lock); fenced: refused when the lease was lost. ARGV[7] = 'skip-fence' is the injected fault \`skip-fence-check\`: the write is accepted whatever the token (and the lock key left alone when it is no longer ours). A fenced incarnation (keys.ts :fenced) is refused whatever the injection. KEYS ptl ptlmax pte fenced; ARGV "owner|token" lockName token vpn pte keep skip incarnation → {'OK', 1} | {'OK', 0} (accepted without the lease: only with skip-fence) | {'ESTALE'}`,
    models: 'set_pte_at() + pte_unmap_unlock(), mm/memory.c (fenced by the lease token)',
    keys: ['ptl', 'ptlmax', 'pte', 'fenced'],
    args: {
      value: LeaseValue,
      lock: Str,
      token: Int,
      vpn: Int,
      pte: PteText,
      keep: z.enum(['', 'keep']),
      skip: z.enum(['', 'skip-fence']),
      incarnation: Str,
    },
    reply: oneOf(tagged('OK', { withLease: Bit }), tagged('ESTALE')),
    lua:
      PT_LUA +
      `
local pfn, gen, w = parse_pte(ARGV[5])
pte_enc(pfn, gen, w) -- a PTE that does not fit is refused before anything is written
if redis.call('SISMEMBER', KEYS[4], ARGV[8]) == 1 then return {'ESTALE'} end
local ok = fenced(KEYS[1], KEYS[2], ARGV[2], ARGV[1], tonumber(ARGV[3]))
if not ok and ARGV[7] ~= 'skip-fence' then return {'ESTALE'} end
pte_set(KEYS[3], tonumber(ARGV[4]), pfn, gen, w)
if not ok then return {'OK', 0} end
if ARGV[6] ~= 'keep' then redis.call('DEL', KEYS[1]) end
return {'OK', 1}
`,
  }),
  zapPteRange: script({
    doc: `zap_pte_range() under a held PT lock lease: clear the PTEs of [s, e) in one page-table page. With an incarnation (ARGV[6]), the frames cleared are appended to the intent record KEYS[5] in the same step (a swap entry as "-slot:gen": its swap_free is owed the same way), so that whoever finishes the operation puts them (never lost, never twice). KEYS ptl ptlmax pte cpumask intent; ARGV "owner|token" lockName token s e incarnation → {'OK', {"vpn:pfn:gen:w", ...}, cpumask} | {'ESTALE'}`,
    models: 'zap_pte_range(), mm/memory.c',
    keys: ['ptl', 'ptlmax', 'pte', 'cpumask', 'intent'],
    args: { value: LeaseValue, lock: Str, token: Int, start: Int, end: Int, incarnation: Str },
    reply: oneOf(tagged('OK', { cleared: Strs, cpumask: Strs }), tagged('ESTALE')),
    lua:
      PT_LUA +
      `
if not fenced(KEYS[1], KEYS[2], ARGV[2], ARGV[1], tonumber(ARGV[3])) then return {'ESTALE'} end
if ARGV[6] ~= '' and redis.call('HGET', KEYS[5], 'owner') ~= ARGV[6] then return {'ESTALE'} end
local cleared, frames = {}, {}
local ed = pte_edit()
for _, p in ipairs(pte_range(KEYS[3], tonumber(ARGV[4]), tonumber(ARGV[5]))) do
  local vpn, pfn, gen, w = p[1], p[2], p[3], p[4]
  pte_edit_clear(ed, vpn)
  cleared[#cleared + 1] = vpn .. ':' .. pte_str(pfn, gen, w)
  frames[#frames + 1] = frame_ref(pfn, gen, w)
end
pte_commit(KEYS[3], ed)
if ARGV[6] ~= '' and #frames > 0 then
  local prev = redis.call('HGET', KEYS[5], 'cleared') or ''
  if prev ~= '' then prev = prev .. ' ' end
  redis.call('HSET', KEYS[5], 'cleared', prev .. table.concat(frames, ' '))
end
return {'OK', cleared, redis.call('SMEMBERS', KEYS[4])}
`,
  }),
  tryToUnmapOne: script({
    doc: `try_to_unmap_one() under a held PT lock lease: if the PTE of vpn still maps frame (pfn, gen) (present, read-only, writable or PROT_NONE), it becomes the swap entry (slot, slot gen) — ptep_clear_flush + set_pte_at(swp_entry_to_pte) in one step (the caller shoots the TLBs down next, still holding the lock). The slot's swap_duplicate was done before (mem swap count), so a swap PTE never names a slot that does not count it. Slot 0: a file's page, whose PTE is just cleared (its file has it) — or, with pgoff, becomes the file PTE of that page (try_to_unmap_cluster in a nonlinear mapping: pgoff_to_pte(page->index)). An incarnation fenced off this address space (keys.ts :fenced: its try_to_unmap_one record was ended by a reaper) changes nothing (ESTALE). With a record (markTtl > 0: unmapRecordOpen's rec, KEYS[6] its :unmapped:<rec>), the PTE step is marked done in the same step (the mark expires after markTtl ms). KEYS ptl ptlmax pte cpumask fenced unmapped; ARGV "owner|token" lockName token vpn pfn gen slot slotGen pgoff incarnation markTtl → {'OK', w (what the PTE was), cpumask} | {'GONE'} (the PTE maps something else now) | {'ESTALE'}`,
    models: 'try_to_unmap_one(), mm/rmap.c v3.7: page_check_address, ptep_clear_flush, set_pte_at',
    keys: ['ptl', 'ptlmax', 'pte', 'cpumask', 'fenced', 'unmapped'],
    args: {
      value: LeaseValue,
      lock: Str,
      token: Int,
      vpn: Int,
      pfn: PteField,
      gen: PteField,
      slot: PteField,
      slotGen: PteField,
      pgoff: z.union([PteField, z.literal('')]),
      incarnation: Str,
      markTtl: Int.min(0),
    },
    reply: oneOf(tagged('OK', { w: Int, cpumask: Strs }), tagged('GONE'), tagged('ESTALE')),
    lua:
      PT_LUA +
      `
if not fenced(KEYS[1], KEYS[2], ARGV[2], ARGV[1], tonumber(ARGV[3])) then return {'ESTALE'} end
if ARGV[10] ~= '' and redis.call('SISMEMBER', KEYS[5], ARGV[10]) == 1 then return {'ESTALE'} end
local vpn = tonumber(ARGV[4])
local w = page_check_address(KEYS[3], vpn, tonumber(ARGV[5]), tonumber(ARGV[6]))
if not w then return {'GONE'} end
if ARGV[9] ~= '' then pte_set(KEYS[3], vpn, tonumber(ARGV[9]), 0, PTE_FILE)
elseif ARGV[7] == '0' then pte_clear(KEYS[3], vpn)
else pte_set(KEYS[3], vpn, tonumber(ARGV[7]), tonumber(ARGV[8]), PTE_SWAP) end
if tonumber(ARGV[11]) > 0 then redis.call('SET', KEYS[6], 1, 'PX', ARGV[11]) end
return {'OK', w, redis.call('SMEMBERS', KEYS[4])}
`,
  }),
  ptepClearFlushYoung: script({
    doc: `ptep_clear_flush_young() under a held PT lock lease: if the PTE of vpn still maps frame (pfn, gen), test and clear its accessed bit (the caller flushes the TLBs when it was set, so the next access walks and sets it again). KEYS ptl ptlmax pte cpumask; ARGV "owner|token" lockName token vpn pfn gen → {'OK', young, cpumask} | {'GONE'} | {'ESTALE'}`,
    models:
      'page_referenced_one() → ptep_clear_flush_young_notify(), mm/rmap.c v3.7 (the PTE half)',
    keys: ['ptl', 'ptlmax', 'pte', 'cpumask'],
    args: { value: LeaseValue, lock: Str, token: Int, vpn: Int, pfn: PteField, gen: PteField },
    reply: oneOf(tagged('OK', { young: Bit, cpumask: Strs }), tagged('GONE'), tagged('ESTALE')),
    lua:
      PT_LUA +
      `
if not fenced(KEYS[1], KEYS[2], ARGV[2], ARGV[1], tonumber(ARGV[3])) then return {'ESTALE'} end
local vpn = tonumber(ARGV[4])
local w = page_check_address(KEYS[3], vpn, tonumber(ARGV[5]), tonumber(ARGV[6]))
if not w then return {'GONE'} end
if not pte_young(KEYS[3], vpn) then return {'OK', 0, {}} end
pte_mkold(KEYS[3], vpn)
return {'OK', 1, redis.call('SMEMBERS', KEYS[4])}
`,
  }),
  pageMkcleanOne: script({
    doc: `page_mkclean_one() under a held PT lock lease: if the PTE of vpn still maps frame (pfn, gen) and is writable (mmlab's PTEs have no dirty bit: writable stands for pte_dirty || pte_write), it becomes read-only — ptep_clear_flush + set_pte_at(pte_wrprotect(pte_mkclean)) in one step (the caller shoots the TLBs down next, still holding the lock). KEYS ptl ptlmax pte cpumask; ARGV "owner|token" lockName token vpn pfn gen → {'OK', cpumask} | {'CLEAN'} (mapped read-only: nothing to do) | {'GONE'} | {'ESTALE'}`,
    models: 'page_mkclean_one(), mm/rmap.c v3.7',
    keys: ['ptl', 'ptlmax', 'pte', 'cpumask'],
    args: { value: LeaseValue, lock: Str, token: Int, vpn: Int, pfn: PteField, gen: PteField },
    reply: oneOf(
      tagged('OK', { cpumask: Strs }),
      tagged('CLEAN'),
      tagged('GONE'),
      tagged('ESTALE'),
    ),
    lua:
      PT_LUA +
      `
if not fenced(KEYS[1], KEYS[2], ARGV[2], ARGV[1], tonumber(ARGV[3])) then return {'ESTALE'} end
local vpn = tonumber(ARGV[4])
local w = page_check_address(KEYS[3], vpn, tonumber(ARGV[5]), tonumber(ARGV[6]))
if not w then return {'GONE'} end
if w ~= 1 then return {'CLEAN'} end
pte_set(KEYS[3], vpn, tonumber(ARGV[5]), tonumber(ARGV[6]), 0)
return {'OK', redis.call('SMEMBERS', KEYS[4])}
`,
  }),
  vmaRemap: script({
    doc: `remap_file_pages()'s VMA change, mmap_sem write-held: [s, e) must lie in one shared VMA mapping a file. nonlinear = 1: the whole VMA becomes VM_NONLINEAR (flags 'nonlinear'; its file PTEs say which page goes where). 0: mmap_region()'s emulation for a file with dirty accounting — [s, e) becomes a VMA of its own mapping the file from page pgoff (split off its neighbours). KEYS vma semW; ARGV "owner|token" s e pgoff nonlinear → {'OK', ino} | {'EINVAL', why} | {'ESTALE'}`,
    models:
      'sys_remap_file_pages(), mm/fremap.c v3.7: VM_NONLINEAR, or mmap_region() when mapping_cap_account_dirty',
    keys: ['vma', 'semW'],
    args: { semValue: LeaseValue, start: Int, end: Int, pgoff: Int, nonlinear: Bit },
    reply: oneOf(tagged('OK', { ino: Int }), tagged('EINVAL', { why: Str }), tagged('ESTALE')),
    lua:
      LUA_HELPERS +
      `
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return {'ESTALE'} end
local s, e, pgoff = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local v = find_vma(KEYS[1], s)
if not v or e > v.e then return {'EINVAL', 'the range is not inside one VMA'} end
if not v.shared or not v.ino then return {'EINVAL', 'not a shared mapping of a file'} end
redis.call('ZREM', KEYS[1], v.m)
if ARGV[5] == '1' then
  local nl = { flags = 'nonlinear', ino = v.ino, delta = v.delta }
  redis.call('ZADD', KEYS[1], v.s, vma_fmt(v.s, v.e, v.prot, nl))
else
  if v.s < s then redis.call('ZADD', KEYS[1], v.s, vma_fmt(v.s, s, v.prot, v)) end
  local lin = { flags = v.flags, ino = v.ino, delta = pgoff - s }
  redis.call('ZADD', KEYS[1], s, vma_fmt(s, e, v.prot, lin))
  if v.e > e then redis.call('ZADD', KEYS[1], e, vma_fmt(e, v.e, v.prot, v)) end
end
return {'OK', v.ino}
`,
  }),
  installFilePtes: script({
    doc: `install_file_pte() for [s, e) of one page-table page, under its held PT lock lease (get_locked_pte: the table is created): each PTE that was there is zapped (zap_pte: a present one cleared — the caller shoots the TLBs down and puts its frame after, marking a writable one's page dirty; a swap entry freed) and becomes the file PTE of page pgoff + (vpn - s). KEYS ptl ptlmax pte pmds cpumask; ARGV "owner|token" lockName token s e pgoff pmd → {'OK', {"vpn:pfn:gen:w" zapped}, cpumask} | {'ESTALE'}`,
    models: 'install_file_pte() → zap_pte(), set_pte_at(pgoff_to_pte), mm/fremap.c v3.7',
    keys: ['ptl', 'ptlmax', 'pte', 'pmds', 'cpumask'],
    args: {
      value: LeaseValue,
      lock: Str,
      token: Int,
      start: Int,
      end: Int,
      pgoff: PteField,
      pmd: Int,
    },
    reply: oneOf(tagged('OK', { zapped: Strs, cpumask: Strs }), tagged('ESTALE')),
    lua:
      PT_LUA +
      `
if not fenced(KEYS[1], KEYS[2], ARGV[2], ARGV[1], tonumber(ARGV[3])) then return {'ESTALE'} end
local s, e, pgoff = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local zapped = {}
for _, p in ipairs(pte_range(KEYS[3], s, e)) do
  if p[4] ~= PTE_FILE then zapped[#zapped + 1] = p[1] .. ':' .. pte_str(p[2], p[3], p[4]) end
end
local ed = pte_edit()
for vpn = s, e - 1 do pte_edit_set(ed, vpn, pgoff + vpn - s, 0, PTE_FILE) end
pte_commit(KEYS[3], ed)
redis.call('SADD', KEYS[4], ARGV[7])
return {'OK', zapped, redis.call('SMEMBERS', KEYS[5])}
`,
  }),
  vmaProtect: script({
    doc: `mprotect_fixup() on the VMA list: set prot on [s, e), splitting VMAs that straddle it and merging neighbours that end up alike (vma_merge). Every page of [s, e) must be mapped (else ENOMEM, as mprotect answers). mmap_sem write-held. KEYS vma semW; ARGV "owner|token" s e prot → {'OK', changedVmas} | {'ESTALE'} | {'ENOMEM'}`,
    models: 'mprotect_fixup(), mm/mprotect.c (with vma_merge / split_vma)',
    keys: ['vma', 'semW'],
    args: { semValue: LeaseValue, start: Int, end: Int, prot: Prot },
    reply: oneOf(tagged('OK', { vmas: Int }), tagged('ESTALE'), tagged('ENOMEM')),
    lua:
      LUA_HELPERS +
      `
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return {'ESTALE'} end
local s, e, newprot = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', e - 1)
local covered, vmas = s, {}
for _, m in ipairs(members) do
  local v = vma_parse(m)
  if v.e > s then vmas[#vmas + 1] = v end
end
table.sort(vmas, function(a, b) return a.s < b.s end)
for _, v in ipairs(vmas) do
  if v.s > covered then return {'ENOMEM'} end
  covered = math.max(covered, v.e)
end
if covered < e then return {'ENOMEM'} end
for _, v in ipairs(vmas) do
  local vs, ve = v.s, v.e
  redis.call('ZREM', KEYS[1], v.m)
  if vs < s then redis.call('ZADD', KEYS[1], vs, vma_fmt(vs, s, v.prot, v)) end
  local ms, me = math.max(vs, s), math.min(ve, e)
  redis.call('ZADD', KEYS[1], ms, vma_fmt(ms, me, newprot, v))
  if ve > e then redis.call('ZADD', KEYS[1], e, vma_fmt(e, ve, v.prot, v)) end
end
-- vma_merge(): neighbours that touch and agree on prot, flags and file offsets become one VMA
local all = redis.call('ZRANGE', KEYS[1], 0, -1)
local prev = nil
for _, m in ipairs(all) do
  local cur = vma_parse(m)
  if prev and vma_mergeable(prev, cur) then
    redis.call('ZREM', KEYS[1], prev.m, cur.m)
    local merged = vma_fmt(prev.s, cur.e, cur.prot, cur)
    redis.call('ZADD', KEYS[1], prev.s, merged)
    cur = vma_parse(merged)
  end
  prev = cur
end
return {'OK', #vmas}
`,
  }),
  changePteRange: script({
    doc: `change_pte_range() under a held PT lock lease: PROT_NONE hides present PTEs (w = 2), r write-protects them, rw only un-hides (write access comes back through write faults). KEYS ptl ptlmax pte cpumask; ARGV "owner|token" lockName token s e prot → {'OK', changed, downgraded, cpumask} | {'ESTALE'}`,
    models: 'change_pte_range(), mm/mprotect.c',
    keys: ['ptl', 'ptlmax', 'pte', 'cpumask'],
    args: { value: LeaseValue, lock: Str, token: Int, start: Int, end: Int, prot: Prot },
    reply: oneOf(tagged('OK', { changed: Int, downgraded: Int, cpumask: Strs }), tagged('ESTALE')),
    lua:
      PT_LUA +
      `
if not fenced(KEYS[1], KEYS[2], ARGV[2], ARGV[1], tonumber(ARGV[3])) then return {'ESTALE'} end
local prot = ARGV[6]
local changed, downgraded = 0, 0
local ed = pte_edit()
for _, p in ipairs(pte_range(KEYS[3], tonumber(ARGV[4]), tonumber(ARGV[5]))) do
  local vpn, pfn, gen, w = p[1], p[2], p[3], p[4]
  local nw = w
  if w == PTE_SWAP or w == PTE_FILE then
    -- not present: a swap entry or a file PTE carries no protection (the VMA's applies at the fault)
  elseif prot == 'none' then nw = 2 elseif w == 2 or prot == 'r' then nw = 0 end
  if nw ~= w then
    pte_edit_set(ed, vpn, pfn, gen, nw)
    changed = changed + 1
    if nw == 2 or (w == 1 and nw == 0) then downgraded = downgraded + 1 end
  end
end
pte_commit(KEYS[3], ed)
return {'OK', changed, downgraded, redis.call('SMEMBERS', KEYS[4])}
`,
  }),
  vmaMove: script({
    doc: `move_vma() on the VMA list: [s, s + pages) (inside one VMA) leaves, [n, n + newPages) appears with the same prot and flags at a fresh address. mmap_sem write-held. With an intent (KEYS[4], ARGV[6] its owner), n is recorded there in the same step. KEYS mm vma semW intent; ARGV "owner|token" s pages newPages limitVpn incarnation → {'OK', n} | {'ESTALE'} | {'EFAULT'} | {'ENOMEM'}`,
    models: 'move_vma(), mm/mremap.c (the VMA half: copy_vma, do_munmap of the old)',
    keys: ['mm', 'vma', 'semW', 'intent'],
    args: {
      semValue: LeaseValue,
      start: Int,
      pages: Int,
      newPages: Int,
      limitVpn: Int,
      incarnation: Str,
    },
    reply: oneOf(tagged('OK', { n: Int }), tagged('ESTALE'), tagged('EFAULT'), tagged('ENOMEM')),
    lua:
      LUA_HELPERS +
      `
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return {'ESTALE'} end
local s, pages, newPages = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local vma = find_vma(KEYS[2], s)
if not vma or s + pages > vma.e then return {'EFAULT'} end
local n = tonumber(redis.call('HGET', KEYS[1], 'mmapNext'))
if n + newPages > tonumber(ARGV[5]) then return {'ENOMEM'} end
redis.call('HSET', KEYS[1], 'mmapNext', n + newPages + 1)
redis.call('ZREM', KEYS[2], vma.m)
if vma.s < s then redis.call('ZADD', KEYS[2], vma.s, vma_fmt(vma.s, s, vma.prot, vma)) end
if vma.e > s + pages then redis.call('ZADD', KEYS[2], s + pages, vma_fmt(s + pages, vma.e, vma.prot, vma)) end
-- the moved VMA maps the same file pages at its new address (vm_pgoff kept: delta moves)
local moved = { flags = vma.flags, ino = vma.ino, delta = vma.delta + s - n }
redis.call('ZADD', KEYS[2], n, vma_fmt(n, n + newPages, vma.prot, moved))
if ARGV[6] ~= '' then redis.call('HSET', KEYS[4], 'newVpn', n) end
return {'OK', n}
`,
  }),
  movePtes: script({
    doc: `move_ptes() under the old range's PT lock lease: PTEs of [s, e) move by delta pages. Refused once the mm is exiting: exit_mmap zaps the page tables that exist, and a move into a table it already zapped would leave a PTE behind it. KEYS ptl ptlmax pte pmds cpumask mm; ARGV "owner|token" lockName token s e delta → {'OK', moved, cpumask} | {'ESTALE'} | {'ESRCH'}`,
    models: 'move_ptes(), mm/mremap.c',
    keys: ['ptl', 'ptlmax', 'pte', 'pmds', 'cpumask', 'mm'],
    args: { value: LeaseValue, lock: Str, token: Int, start: Int, end: Int, delta: Int },
    reply: oneOf(tagged('OK', { moved: Int, cpumask: Strs }), tagged('ESTALE'), tagged('ESRCH')),
    lua:
      PT_LUA +
      `
if not fenced(KEYS[1], KEYS[2], ARGV[2], ARGV[1], tonumber(ARGV[3])) then return {'ESTALE'} end
if redis.call('HGET', KEYS[6], 'state') ~= 'alive' then return {'ESRCH'} end
local delta, moved = tonumber(ARGV[6]), 0
local ptes = pte_range(KEYS[3], tonumber(ARGV[4]), tonumber(ARGV[5]))
-- cleared first, then set: a destination that overlaps the source keeps what moved there
local ed = pte_edit()
for _, p in ipairs(ptes) do pte_edit_clear(ed, p[1]) end
pte_commit(KEYS[3], ed)
ed = pte_edit()
for _, p in ipairs(ptes) do
  pte_edit_set(ed, p[1] + delta, p[2], p[3], p[4])
  redis.call('SADD', KEYS[4], math.floor((p[1] + delta) / PTRS_PER_PTE))
  moved = moved + 1
end
pte_commit(KEYS[3], ed)
return {'OK', moved, redis.call('SMEMBERS', KEYS[5])}
`,
  }),
  copyPteRange: script({
    doc: `copy_pte_range(), the parent's half, under its PT lock lease: read the PTEs of [s, e) and, for a COW mapping, write-protect the parent's writable ones. A PTE a dead COW cleared (w = 3) is the old page, read-only, for the child; a swap entry is copied as it is (its swap_duplicate is the chunk's "-slot:gen", as copy_one_pte's). The frames the child will map are recorded as chunk n of fork's intent record (KEYS[5], refused unless owned by ARGV[7]) in the same step. KEYS ptl ptlmax pte cpumask intent; ARGV "owner|token" lockName token s e cow incarnation → {'OK', {"vpn:pfn:gen:w" for the child}, writeProtected, cpumask, n} | {'ESTALE'}`,
    models: "copy_pte_range(), mm/memory.c: the parent's half (copy_one_pte's ptep_set_wrprotect)",
    keys: ['ptl', 'ptlmax', 'pte', 'cpumask', 'intent'],
    args: {
      value: LeaseValue,
      lock: Str,
      token: Int,
      start: Int,
      end: Int,
      cow: Bit,
      incarnation: Str,
    },
    reply: oneOf(
      tagged('OK', { child: Strs, writeProtected: Int, cpumask: Strs, chunk: Int }),
      tagged('ESTALE'),
    ),
    lua:
      PT_LUA +
      `
if not fenced(KEYS[1], KEYS[2], ARGV[2], ARGV[1], tonumber(ARGV[3])) then return {'ESTALE'} end
if redis.call('HGET', KEYS[5], 'owner') ~= ARGV[7] then return {'ESTALE'} end
local cow = ARGV[6] == '1'
local out, frames, wp = {}, {}, 0
local ed = pte_edit()
for _, p in ipairs(pte_range(KEYS[3], tonumber(ARGV[4]), tonumber(ARGV[5]))) do
  local vpn, pfn, gen, w = p[1], p[2], p[3], p[4]
  if w == 3 then w = 0 end
  if cow and w == 1 then
    pte_edit_set(ed, vpn, pfn, gen, 0)
    w = 0; wp = wp + 1
  end
  out[#out + 1] = vpn .. ':' .. pte_str(pfn, gen, w)
  frames[#frames + 1] = frame_ref(pfn, gen, w)
end
pte_commit(KEYS[3], ed)
local n = redis.call('HINCRBY', KEYS[5], 'chunks', 1)
redis.call('HSET', KEYS[5], 'chunk:' .. n, table.concat(frames, ' '))
return {'OK', out, wp, redis.call('SMEMBERS', KEYS[4]), n}
`,
  }),
  forkChild: script({
    doc: `dup_mm() for the child: a fresh mm with the parent's VMA list, in state 'forking' (every fault and syscall on it: ESRCH) until forkDone; forker: the fork's intent id. A pid that exists already (a tombstone left by forkUndo) is refused. KEYS mm vma; ARGV mmapNext forker member... → 1 | 0`,
    models: 'dup_mm() → dup_mmap(), kernel/fork.c: the VMA list',
    keys: ['mm', 'vma'],
    args: { mmapNext: Int, forker: Str, vmas: Strs },
    reply: Bit,
    lua:
      LUA_HELPERS +
      `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'seq', 0, 'mmapNext', ARGV[1], 'state', 'forking', 'forker', ARGV[2])
for i = 3, #ARGV do
  local vs = string.match(ARGV[i], '^(%d+):')
  redis.call('ZADD', KEYS[2], tonumber(vs), ARGV[i])
end
return 1
`,
  }),
  forkDone: script({
    doc: `The fork is complete: its child comes alive. KEYS mm; ARGV forker → 1 | 0 (not its child)`,
    models: 'copy_process(), kernel/fork.c: the child is complete (wake_up_new_task)',
    keys: ['mm'],
    args: { forker: Str },
    reply: Bit,
    lua:
      LUA_HELPERS +
      `
if redis.call('HGET', KEYS[1], 'state') ~= 'forking' then return 0 end
if redis.call('HGET', KEYS[1], 'forker') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'alive')
redis.call('HDEL', KEYS[1], 'forker')
return 1
`,
  }),
  forkUndo: script({
    doc: `A fork whose replica died before forkDone is rolled back: its child, if any, becomes a tombstone (state dead: a late setPtes or forkChild of a stopped replica is refused) without VMAs or PTEs. The references its PTEs held are put by batchUndo, chunk by chunk. KEYS mm vma pte pmds; ARGV forker → {'UNDONE'} | {'ALIVE'} (the fork had completed)`,
    models: 'none: lab crash recovery of a dup_mm that did not complete (mmput of the child)',
    keys: ['mm', 'vma', 'pte', 'pmds'],
    args: { forker: Str },
    reply: oneOf(tagged('UNDONE'), tagged('ALIVE')),
    lua:
      LUA_HELPERS +
      `
local st = redis.call('HGET', KEYS[1], 'state')
if st == 'alive' then return {'ALIVE'} end
redis.call('HSET', KEYS[1], 'state', 'dead', 'forker', ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
return {'UNDONE'}
`,
  }),
  setPtes: script({
    doc: `copy_pte_range(), the child's half, while the child is being forked by forker. KEYS pte pmds mm; ARGV forker "vpn:pfn:gen:w"... → n | -1 (not forking it: refused)`,
    models: "copy_pte_range(), mm/memory.c: the child's half (copy_one_pte's set_pte_at)",
    keys: ['pte', 'pmds', 'mm'],
    args: { forker: Str, ptes: z.array(VpnPteText) },
    reply: Int.describe('n | -1'),
    lua:
      PT_LUA +
      `
if redis.call('HGET', KEYS[3], 'state') ~= 'forking' then return -1 end
if redis.call('HGET', KEYS[3], 'forker') ~= ARGV[1] then return -1 end
local ed, pmds = pte_edit(), {}
for i = 2, #ARGV do
  local vpn, rest = string.match(ARGV[i], '^(%d+):(.*)$')
  local pfn, gen, w = parse_pte(rest or '')
  vpn = tonumber(vpn)
  if not vpn then pte_bad('PTE ' .. ARGV[i]) end
  pte_edit_set(ed, vpn, pfn, gen, w) -- checked here, written below: a bad one writes nothing
  pmds[math.floor(vpn / PTRS_PER_PTE)] = true
end
for pmd in pairs(pmds) do redis.call('SADD', KEYS[2], pmd) end
pte_commit(KEYS[1], ed)
return #ARGV - 1
`,
  }),
  mmExitBegin: script({
    doc: `exit_mmap()'s beginning (the last mmput): the mm is exiting — from this step on every fault, mmap, mmap_sem acquire, pinned_vm charge and move_ptes on it refuses (ESRCH), and the seq moves so that a do_wp_page between its steps goes back to the top (and finds it exiting). No mmap_sem: nobody else can be in an mm whose mm_users is 0. An mm already exiting (an exit that failed half way) may be exited again. KEYS mm → {'OK', 1 (began) | 0 (was exiting)} | {'ESRCH'}`,
    models: 'exit_mmap(), mm/mmap.c: its beginning (the last mmput)',
    keys: ['mm'],
    args: {},
    reply: oneOf(tagged('OK', { began: Bit }), tagged('ESRCH')),
    lua:
      LUA_HELPERS +
      `
local st = redis.call('HGET', KEYS[1], 'state')
if st == 'exiting' then return {'OK', 0} end
if st ~= 'alive' then return {'ESRCH'} end
redis.call('HSET', KEYS[1], 'state', 'exiting')
redis.call('HINCRBY', KEYS[1], 'seq', 2)
return {'OK', 1}
`,
  }),
  mmExit: script({
    doc: `exit_mmap()'s end (remove_vma, free_pgtables): the mm is dead, its VMAs and page-table pages gone — only once no PTE is left (else AGAIN: zap again). KEYS mm vma pte pmds → {'OK', 1 (ended it) | 0 (was dead)} | {'AGAIN', ptes} | {'ESRCH'}`,
    models: 'exit_mmap(), mm/mmap.c: free_pgtables() and remove_vma() once no PTE is left',
    keys: ['mm', 'vma', 'pte', 'pmds'],
    args: {},
    reply: oneOf(tagged('OK', { ended: Bit }), tagged('AGAIN', { ptes: Int }), tagged('ESRCH')),
    lua:
      PT_LUA +
      `
local st = redis.call('HGET', KEYS[1], 'state')
if st == 'dead' then return {'OK', 0} end
if st ~= 'exiting' then return {'ESRCH'} end
local n = #pte_all(KEYS[3])
if n > 0 or redis.call('HLEN', KEYS[3]) > 0 then return {'AGAIN', math.max(n, 1)} end
redis.call('HSET', KEYS[1], 'state', 'dead')
redis.call('DEL', KEYS[2], KEYS[4])
return {'OK', 1}
`,
  }),
  walk: script({
    doc: `The hardware page walker: read one PTE, set its accessed bit, and join mm_cpumask when it found a translation (the CPU may now cache it; one that found none joins nothing, so a walk of a process that does not exist leaves nothing behind). A PTE a COW cleared (w = 3) is pte_none to it, a swap entry (w = 4) or a file PTE (w = 5) not present. KEYS pte cpumask; ARGV vpn agent → "pfn:gen:w" | false`,
    models: 'the hardware page walker (a TLB fill), joining mm_cpumask',
    keys: ['pte', 'cpumask', 'pmdhuge'],
    args: { vpn: Int, agent: Str },
    reply: Str.nullable().describe('"pfn:gen:w" | null'),
    lua:
      PT_LUA +
      THP_LUA +
      `
local vpn = tonumber(ARGV[1])
-- a huge entry: the subpage of vpn (a cleared one, w = 3, is pmd_none)
local hv, hp, hg, hw = huge_get(KEYS[3], vpn)
if hv then
  if hw == 3 then return false end
  redis.call('SADD', KEYS[2], ARGV[2])
  return pte_str(hp + vpn - hv, hg, hw)
end
local pfn, gen, w = pte_get(KEYS[1], vpn)
if not pfn or w == 3 or w >= PTE_SWAP then return false end
-- the walker sets the accessed bit of what it fills (pte_mkyoung): reclaim reads it
if (w == 0 or w == 1) and not pte_young(KEYS[1], vpn) then pte_set(KEYS[1], vpn, pfn, gen, w) end
redis.call('SADD', KEYS[2], ARGV[2])
return pte_str(pfn, gen, w)
`,
  }),
  pendingFence: script({
    doc: `A pending frame (keys.ts {mem}:pending) of incarnation ARGV[1], found dead: fence that incarnation off this address space (its fault scripts here are refused from now on), then say whether any PTE holds the frame (installed: roll forward; else roll back). KEYS pte fenced; ARGV incarnation pfn gen → 1 | 0`,
    models: 'none: lab crash recovery of a page a dead replica allocated (fence, then look)',
    keys: ['pte', 'fenced'],
    args: { incarnation: Str, pfn: Int, gen: Int },
    reply: Bit,
    lua:
      PT_LUA +
      `
redis.call('SADD', KEYS[2], ARGV[1])
local pfn, gen = tonumber(ARGV[2]), tonumber(ARGV[3])
if pte_field_ok(pfn) and pte_field_ok(gen) and pte_maps(KEYS[1], pfn, gen) then return 1 end
return 0
`,
  }),
  unmapFence: script({
    doc: `A try_to_unmap_one record ({mem}:pending u:<rec>, unmapRecordOpen) of incarnation ARGV[1], found dead: fence that incarnation off this address space (its scripts here are refused from now on), then say whether the unmap happened — its PTE step's mark (KEYS[3] :unmapped:<rec>, tryToUnmapOne) is there: it did (the page's mapping is owed its put; a swap-in since may map the page again); no mark (expired: a reap later than its TTL) and the PTE of vpn still maps the page (pfn, gen), present or cleared by a COW in flight (w 0..3): it never did (its swap duplicate is owed back). KEYS pte fenced unmapped; ARGV incarnation vpn pfn gen → 1 (still mapped: not unmapped) | 0`,
    models: "none: lab crash recovery of a dead replica's try_to_unmap_one (fence, then look)",
    keys: ['pte', 'fenced', 'unmapped'],
    args: { incarnation: Str, vpn: Int.min(0), pfn: Int, gen: Int },
    reply: Bit,
    lua:
      PT_LUA +
      `
redis.call('SADD', KEYS[2], ARGV[1])
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local pfn, gen, w = pte_get(KEYS[1], tonumber(ARGV[2]))
if pfn == tonumber(ARGV[3]) and gen == tonumber(ARGV[4]) and w <= 3 then return 1 end
return 0
`,
  }),
  pcpFence: script({
    doc: `An mm incarnation found dead (orphan_ranges.ts): fence it off this address space (as invFence: its fault scripts, invOpen, invClaim, intentOpen and intentClaim here are refused from now on), then read which of its batch's reserve frames its faults installed here (:rsv). KEYS fenced rsv; ARGV incarnation → {added (1: fenced now, 0: already), "pfn:gen ..." ('' none)}`,
    models: "none: lab crash recovery of a dead replica's per_cpu_pages batch (fence, then look)",
    keys: ['fenced', 'rsv'],
    args: { incarnation: Str },
    reply: z
      .tuple([Bit, Str])
      .transform(([added, installed]) => ({ added, installed }))
      .describe('{added, installed}'),
    lua:
      LUA_HELPERS +
      `
local added = redis.call('SADD', KEYS[1], ARGV[1])
return {added, redis.call('HGET', KEYS[2], ARGV[1]) or ''}
`,
  }),
  pteDump: script({
    doc: `Every PTE of the address space, decoded (mm/lua.ts), and the stored fields that break the packed layout (read, never written). KEYS pte → {'OK', {"vpn:pfn:gen:w", ...} (vpn order), {field, ...}}`,
    models: 'none: a dump of the page tables (tests, diagnostics, fsck)',
    keys: ['pte'],
    args: {},
    reply: tagged('OK', { ptes: Strs, bad: Strs }),
    lua:
      PT_LUA +
      `
local all, bad = pte_all(KEYS[1])
table.sort(all, function(a, b) return a[1] < b[1] end)
local out = {}
for i, p in ipairs(all) do out[i] = p[1] .. ':' .. pte_str(p[2], p[3], p[4]) end
return {'OK', out, bad}
`,
  }),
  ptePoke: script({
    doc: `Write one PTE as given, or pte_none for '', with no check at all (no lease, VMA, frame count or :pmds): a test corrupting the state on purpose. KEYS pte; ARGV vpn pte → 1`,
    models: 'none: a raw write of one PTE (tests that corrupt the state)',
    keys: ['pte'],
    args: { vpn: Int, pte: z.union([PteText, z.literal('')]) },
    reply: z.literal(1).describe('1'),
    lua:
      PT_LUA +
      `
local vpn = tonumber(ARGV[1])
if ARGV[2] == '' then pte_clear(KEYS[1], vpn); return 1 end
local pfn, gen, w = parse_pte(ARGV[2])
pte_set(KEYS[1], vpn, pfn, gen, w)
return 1
`,
  }),
  ptlHeldBy: script({
    doc: `Which of the given PT locks (KEYS) is held by owner, if any: a subscriber's check, on receipt of a callback, that the sender is not sleeping on it under a spinlock. ARGV owner → the held key | false`,
    models: 'spin_is_locked() of the PT locks covering a range, by their holder',
    keys: [],
    varKeys: 'the PT-lock keys to look at (one hash tag)',
    args: { owner: Str },
    reply: Str.nullable().describe('the held key | null'),
    lua: `
local prefix = ARGV[1] .. '|'
for _, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if v and string.sub(v, 1, #prefix) == prefix then return k end
end
return false
`,
  }),
  heldLocks: script({
    doc: `The PT-lock and mmap_sem leases of one address space held right now, with what is left of their TTL (meminfo: "no lock left held" at the end of a run). KEYS: the lease keys (one hash tag); ARGV: their lock names, in the same order → {name, "owner|token", pttl, ...}`,
    models: 'none: the PT-lock and mmap_sem leases held (diagnostics, fsck)',
    keys: [],
    varKeys: 'the lease keys (one hash tag), parallel to names',
    args: { names: Strs },
    reply: z
      .array(z.union([Str, Int]))
      .transform((a) => triplesOf(a))
      .describe('[name, "owner|token", pttl, ...]'),
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
  }),
  cpumaskClear: script({
    doc: `Leave mm_cpumask (an agent that went away). KEYS cpumask; ARGV agent`,
    models: 'cpumask_clear_cpu(cpu, mm_cpumask(mm)), include/linux/cpumask.h',
    keys: ['cpumask'],
    args: { agent: Str },
    reply: Int.describe('removed: 1 | 0'),
    lua:
      LUA_HELPERS +
      `
return redis.call('SREM', KEYS[1], ARGV[1])
`,
  }),
  invOpen: script({
    doc: `Record an open range invalidation before its invalidate_range_start is sent (the owner indexed this pid first: invIndex). An owner found dead and fenced off this address space (:fenced) may open none: its index no longer names the pid. KEYS inv invown fenced; ARGV inv record owner → {'OK'} | {'EXISTS'} (inv already recorded: nothing written) | {'FENCED'}`,
    models:
      '__mmu_notifier_invalidate_range_start(), mm/mmu_notifier.c: the range recorded before it is sent',
    keys: ['inv', 'invown', 'fenced'],
    args: { inv: Str, record: Str, owner: Str },
    reply: oneOf(tagged('OK'), tagged('EXISTS'), tagged('FENCED')),
    lua:
      LUA_HELPERS +
      `
if redis.call('SISMEMBER', KEYS[3], ARGV[3]) == 1 then return {'FENCED'} end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  return {'EXISTS'}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3] .. '|open')
return {'OK'}
`,
  }),
  invClaim: script({
    doc: `Take the end of an open invalidation: from the incarnation expected to own it, to another (or the same, for the sender's own end); it is 'ending' from then on. Exactly one caller wins per owner change, so the sender and a replica that thinks it dead never both end it. The new owner indexed this pid first (invIndex); one fenced off this address space takes nothing. KEYS invown fenced; ARGV inv from to → {'OK', previous state} | {'LOST', owner} | {'GONE'} | {'FENCED'}`,
    models: 'none: lab crash recovery: the end of an open range invalidation changes owner',
    keys: ['invown', 'fenced'],
    args: { inv: Str, from: Str, to: Str },
    reply: oneOf(
      tagged('OK', { prev: Str }),
      tagged('LOST', { owner: Str }),
      tagged('GONE'),
      tagged('FENCED'),
    ),
    lua:
      LUA_HELPERS +
      `
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return {'GONE'} end
local owner, state = string.match(v, '^(.*)|(%a+)$')
if owner ~= ARGV[2] then return {'LOST', owner or v} end
if redis.call('SISMEMBER', KEYS[2], ARGV[3]) == 1 then return {'FENCED'} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3] .. '|ending')
return {'OK', state}
`,
  }),
  invFence: script({
    doc: `An mm incarnation found dead: fence it off this address space before the reaper drops the pid from its index (invUnindex), so that, stopped and resumed, it can open or take over nothing here that its index would not name (invOpen, invClaim, intentOpen and intentClaim refuse it; so do its fault scripts, as after pendingFence). KEYS fenced; ARGV incarnation → 1 (fenced now) | 0 (fenced already)`,
    models: 'none: lab crash recovery: a dead mm incarnation fenced off an address space',
    keys: ['fenced'],
    args: { incarnation: Str },
    reply: Bit,
    lua:
      LUA_HELPERS +
      `
return redis.call('SADD', KEYS[1], ARGV[1])
`,
  }),
  invClose: script({
    doc: `Forget an invalidation whose invalidate_range_end was acked, if owner still owns it. KEYS inv invown; ARGV inv owner → 1 | 0`,
    models: '__mmu_notifier_invalidate_range_end(), mm/mmu_notifier.c: acked, forgotten',
    keys: ['inv', 'invown'],
    args: { inv: Str, owner: Str },
    reply: Bit,
    lua:
      LUA_HELPERS +
      `
local v = redis.call('HGET', KEYS[2], ARGV[1])
if not v or string.match(v, '^(.*)|%a+$') ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
`,
  }),
  intentOpen: script({
    doc: `Record a multi-step operation before its first change (the owner indexed this pid first: invIndex; one fenced off this address space records none). KEYS intents intent fenced; ARGV id owner rec → {'OK'} | {'EXISTS'} (recorded already: nothing written) | {'FENCED'}`,
    models: "none: lab crash recovery: a multi-step operation's intent record",
    keys: ['intents', 'intent', 'fenced'],
    args: { id: Str, owner: Str, rec: Str },
    reply: oneOf(tagged('OK'), tagged('EXISTS'), tagged('FENCED')),
    lua:
      LUA_HELPERS +
      `
if redis.call('SISMEMBER', KEYS[3], ARGV[2]) == 1 then return {'FENCED'} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'EXISTS'} end
redis.call('HSET', KEYS[2], 'owner', ARGV[2], 'rec', ARGV[3], 'batch', 0)
redis.call('SADD', KEYS[1], ARGV[1])
return {'OK'}
`,
  }),
  intentClaim: script({
    doc: `Take an operation over from the incarnation expected to own it (one winner); from then on the PT locks its old owner asks for it are refused. The new owner indexed this pid first (invIndex); one fenced off this address space takes nothing. KEYS intent fenced; ARGV from to → {'OK'} | {'LOST', owner} | {'GONE'} | {'FENCED'}`,
    models: 'none: lab crash recovery: an operation taken over from a dead replica',
    keys: ['intent', 'fenced'],
    args: { from: Str, to: Str },
    reply: oneOf(tagged('OK'), tagged('LOST', { owner: Str }), tagged('GONE'), tagged('FENCED')),
    lua:
      LUA_HELPERS +
      `
local o = redis.call('HGET', KEYS[1], 'owner')
if not o then return {'GONE'} end
if o ~= ARGV[1] then return {'LOST', o} end
if redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 1 then return {'FENCED'} end
redis.call('HSET', KEYS[1], 'owner', ARGV[2])
return {'OK'}
`,
  }),
  intentFlushed: script({
    doc: `The cleared frames of batch ARGV[2] were put: forget them, next batch. KEYS intent; ARGV owner batch → 1 | 0 (not the owner, or another batch)`,
    models: 'none: lab crash recovery: a batch of cleared frames was put',
    keys: ['intent'],
    args: { owner: Str, batch: Int },
    reply: Bit,
    lua:
      LUA_HELPERS +
      `
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'batch') ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], 'cleared')
redis.call('HINCRBY', KEYS[1], 'batch', 1)
return 1
`,
  }),
  intentClose: script({
    doc: `The operation is over: forget it, if owner still owns it. KEYS intents intent; ARGV id owner → 1 | 0`,
    models: 'none: lab crash recovery: the operation is over',
    keys: ['intents', 'intent'],
    args: { id: Str, owner: Str },
    reply: Bit,
    lua:
      LUA_HELPERS +
      `
if redis.call('HGET', KEYS[2], 'owner') ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[1], ARGV[1])
return 1
`,
  }),
} as const;
