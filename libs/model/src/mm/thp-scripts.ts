/**
 * An address space's transparent huge page entries ({p:<pid>}:pmdhuge, keys.ts): the scripts of
 * mm/huge_memory.c v3.7 that change them, each guarded by mm->page_table_lock (:ptl:mm) — the
 * lease-free install of the fault path checks that nobody holds it, the others hold it as a lease
 * and are fenced by its token. Helpers: mm/thp-lua.ts (the entries), mm/lua.ts (the PTEs a split
 * or a fallback writes).
 */
import { z } from 'zod';
import { Bit, Int, LeaseValue, Str, Strs, oneOf, script, tagged } from '../boundary';
import { LUA_HELPERS } from '../lua';
import { PTE_FIELD_MAX, PTE_LUA } from './lua';
import { THP_LUA } from './thp-lua';

const THP_HELPERS = LUA_HELPERS + PTE_LUA + THP_LUA;

const PteField = Int.min(0).max(PTE_FIELD_MAX);
/** A huge entry as a script takes it: "pfn:gen:w", w 0 or 1 */
const HugeText = z
  .string()
  .regex(/^\d+:\d+:[01]$/)
  .describe('"pfn:gen:w"');
/** A PTE and where, as a split or a fallback writes it: "vpn:pfn:gen:w" (w 0 or 1) */
const VpnPte = z
  .string()
  .regex(/^\d+:\d+:\d+:[01]$/)
  .describe('"vpn:pfn:gen:w"');

export const THP_SCRIPTS = {
  hugePmdInstall: script({
    doc: `do_huge_pmd_anonymous_page()'s install, one atomic step of the lease-free fault path: the huge entry (pfn, gen: a compound page of allocHugePage) at hvpn, writable when the VMA is (maybe_pmd_mkwrite), only if the mm is alive, this incarnation not fenced, mmap_sem not write-held by another, page_table_lock free, the range [hvpn, hvpn + 2^order) inside one anonymous private accessible VMA, and pmd_none there: no huge entry and no PTE (else RETRY: the caller puts the page back and faults again). KEYS mm vma pte pmdhuge semW ptlmm cpumask fenced; ARGV hvpn order pfn gen agent incarnation mmapSem → {'OK', w} | {'RETRY'} | {'BUSY', what} | {'SIGSEGV'} | {'ESRCH'} | {'FENCED'}`,
    models: 'do_huge_pmd_anonymous_page() → __do_huge_pmd_anonymous_page(), mm/huge_memory.c v3.7',
    keys: ['mm', 'vma', 'pte', 'pmdhuge', 'semW', 'ptlmm', 'cpumask', 'fenced'],
    args: {
      hvpn: Int.min(0),
      order: Int.min(1),
      pfn: PteField,
      gen: PteField,
      agent: Str,
      incarnation: Str,
      mmapSem: Str,
    },
    reply: oneOf(
      tagged('OK', { w: Int }),
      tagged('RETRY'),
      tagged('BUSY', { what: Str }),
      tagged('SIGSEGV'),
      tagged('ESRCH'),
      tagged('FENCED'),
    ),
    lua:
      THP_HELPERS +
      `
if redis.call('HGET', KEYS[1], 'state') ~= 'alive' then return {'ESRCH'} end
if redis.call('SISMEMBER', KEYS[8], ARGV[6]) == 1 then return {'FENCED'} end
if sem_w_other(KEYS[5], ARGV[7]) then return {'BUSY', 'mmap_sem'} end
if redis.call('EXISTS', KEYS[6]) == 1 then return {'BUSY', 'ptl'} end
local hv, o = tonumber(ARGV[1]), tonumber(ARGV[2])
local n = 2 ^ o
if hv % n ~= 0 then return {'RETRY'} end
local vma = find_vma(KEYS[2], hv)
if not vma or vma.prot == 'none' then return {'SIGSEGV'} end
if vma.ino or vma.shared or hv + n > vma.e then return {'RETRY'} end
if huge_get(KEYS[4], hv) then return {'RETRY'} end
if #pte_range(KEYS[3], hv, hv + n) > 0 then return {'RETRY'} end
local w = 0
if vma.prot == 'rw' then w = 1 end
huge_set(KEYS[4], hv, tonumber(ARGV[3]), tonumber(ARGV[4]), w, o)
redis.call('SADD', KEYS[7], ARGV[5])
return {'OK', w}
`,
  }),
  hugePmdLock: script({
    doc: `spin_lock(&mm->page_table_lock) as a lease, then pmd_same: the huge entry at hvpn must still be expected ("pfn:gen:w"; a w = 3 one is a dead holder's: read as w = 0). clear = 1: pmdp_clear_flush without the flush — the entry is marked cleared (w = 3: pmd_none to every walker; the caller shoots the TLBs down next, still holding the lock). seq: the mm seq the fault read ('' for a caller holding mmap_sem itself, whose seq it moved); mmapSem as the fault's, or '*': no mmap_sem check (a split or a collapse: v3.7's split_huge_page runs under the anon_vma lock, not mmap_sem). KEYS mm pmdhuge semW ptlmm ptlmax fence cpumask fenced; ARGV hvpn expected seq owner ttl lockName agent incarnation mmapSem clear → {'OK', token, cpumask} | {'RETRY'} | {'BUSY', what} | {'FENCED'}`,
    models:
      'spin_lock(&mm->page_table_lock) + pmd_same() (+ pmdp_clear_flush), mm/huge_memory.c v3.7',
    keys: ['mm', 'pmdhuge', 'semW', 'ptlmm', 'ptlmax', 'fence', 'cpumask', 'fenced'],
    args: {
      hvpn: Int.min(0),
      expected: HugeText,
      seq: z.union([Int, z.literal('')]),
      owner: Str,
      ttlMs: Int,
      lock: Str,
      agent: Str,
      incarnation: Str,
      mmapSem: Str,
      clear: Bit,
    },
    reply: oneOf(
      tagged('OK', { token: Int, cpumask: Strs }),
      tagged('RETRY'),
      tagged('BUSY', { what: Str }),
      tagged('FENCED'),
    ),
    lua:
      THP_HELPERS +
      `
if redis.call('SISMEMBER', KEYS[8], ARGV[8]) == 1 then return {'FENCED'} end
if ARGV[9] ~= '*' and sem_w_other(KEYS[3], ARGV[9]) then return {'BUSY', 'mmap_sem'} end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[1], 'seq') ~= ARGV[3] then return {'RETRY'} end
if redis.call('EXISTS', KEYS[4]) == 1 then return {'BUSY', 'ptl'} end
local hv, pfn, gen, w = huge_get(KEYS[2], tonumber(ARGV[1]))
if not hv or hv ~= tonumber(ARGV[1]) then return {'RETRY'} end
if w == 3 then w = 0 end
if pfn .. ':' .. gen .. ':' .. w ~= ARGV[2] then return {'RETRY'} end
local token = redis.call('INCR', KEYS[6])
redis.call('SET', KEYS[4], ARGV[4] .. '|' .. token, 'PX', ARGV[5])
redis.call('HSET', KEYS[5], ARGV[6], token)
local o = huge_order(KEYS[2])
if ARGV[10] == '1' then huge_set(KEYS[2], hv, pfn, gen, 3, o)
elseif w ~= tonumber(string.sub(ARGV[2], -1)) then huge_set(KEYS[2], hv, pfn, gen, w, o) end
redis.call('SADD', KEYS[7], ARGV[7])
return {'OK', token, redis.call('SMEMBERS', KEYS[7])}
`,
  }),
  hugePmdSetUnlock: script({
    doc: `Under a held page_table_lock lease (fenced by its token): the huge entry at hvpn becomes entry ("pfn:gen:w"; '' = none: pmd_clear) and the PTEs given are written (the huge entry replaced by small PTEs: do_huge_pmd_wp_page_fallback's, or __split_huge_page_map's, pmd_populate of the deposited page table); then spin_unlock unless keep ('keep': v3.6 sends its range end before the unlock). Setting a huge entry drops every PTE left in its range (collapse_huge_page's, cleared as w = 3 by collapseLock). KEYS ptlmm ptlmax pmdhuge pte pmds fenced; ARGV "owner|token" lockName token hvpn order entry keep incarnation ptes... → {'OK'} | {'ESTALE'}`,
    models:
      'set_pmd_at() / pmd_populate() + spin_unlock(&mm->page_table_lock), mm/huge_memory.c v3.7',
    keys: ['ptlmm', 'ptlmax', 'pmdhuge', 'pte', 'pmds', 'fenced'],
    args: {
      value: LeaseValue,
      lock: Str,
      token: Int,
      hvpn: Int.min(0),
      order: Int.min(1),
      entry: z.union([HugeText, z.literal('')]),
      keep: z.enum(['', 'keep']),
      incarnation: Str,
      ptes: z.array(VpnPte),
    },
    reply: oneOf(tagged('OK'), tagged('ESTALE')),
    lua:
      THP_HELPERS +
      `
if redis.call('SISMEMBER', KEYS[6], ARGV[8]) == 1 then return {'ESTALE'} end
if not fenced(KEYS[1], KEYS[2], ARGV[2], ARGV[1], tonumber(ARGV[3])) then return {'ESTALE'} end
local hv, o = tonumber(ARGV[4]), tonumber(ARGV[5])
local ed, pmds = pte_edit(), {}
for i = 9, #ARGV do
  local vpn, rest = string.match(ARGV[i], '^(%d+):(.*)$')
  local pfn, gen, w = parse_pte(rest)
  vpn = tonumber(vpn)
  if vpn < hv or vpn >= hv + 2 ^ o then pte_bad('PTE ' .. ARGV[i] .. ' outside the huge range ' .. hv) end
  pte_edit_set(ed, vpn, pfn, gen, w)
  pmds[math.floor(vpn / PTRS_PER_PTE)] = true
end
if ARGV[6] == '' then huge_del(KEYS[3], hv)
else
  local pfn, gen, w = parse_pte(ARGV[6])
  huge_set(KEYS[3], hv, pfn, gen, w, o)
  -- a huge entry's range holds no PTE: a collapse's cleared ones (w = 3) go with its set
  for _, p in ipairs(pte_range(KEYS[4], hv, hv + 2 ^ o)) do pte_edit_clear(ed, p[1]) end
end
for pmd in pairs(pmds) do redis.call('SADD', KEYS[5], pmd) end
pte_commit(KEYS[4], ed)
if ARGV[7] ~= 'keep' then redis.call('DEL', KEYS[1]) end
return {'OK'}
`,
  }),
  zapHugePmd: script({
    doc: `zap_huge_pmd() under a held page_table_lock lease: every huge entry whose range lies inside [s, e) is cleared (a w = 3 one too: its holder is gone, the lease is ours) and listed; one the range only meets is listed as partial and left alone (the caller splits it first: split_huge_page_pmd). With an incarnation (an operation with an intent record, KEYS[5]: munmap, exit, ...), refused unless it still owns the record, and the heads cleared are appended to the record's cleared frames in the same step, as zapPteRange's (whoever finishes the operation puts them: never lost, never twice). KEYS ptlmm ptlmax pmdhuge cpumask intent; ARGV "owner|token" lockName token s e incarnation → {'OK', {"hvpn:pfn:gen:w", ...}, {hvpn, ...} partial, cpumask} | {'ESTALE'}`,
    models: 'zap_huge_pmd(), mm/huge_memory.c v3.7 (from zap_pmd_range)',
    keys: ['ptlmm', 'ptlmax', 'pmdhuge', 'cpumask', 'intent'],
    args: { value: LeaseValue, lock: Str, token: Int, start: Int, end: Int, incarnation: Str },
    reply: oneOf(
      tagged('OK', { cleared: Strs, partial: z.array(Int), cpumask: Strs }),
      tagged('ESTALE'),
    ),
    lua:
      THP_HELPERS +
      `
if not fenced(KEYS[1], KEYS[2], ARGV[2], ARGV[1], tonumber(ARGV[3])) then return {'ESTALE'} end
if ARGV[6] ~= '' and redis.call('HGET', KEYS[5], 'owner') ~= ARGV[6] then return {'ESTALE'} end
local s, e = tonumber(ARGV[4]), tonumber(ARGV[5])
local all, o = huge_range(KEYS[3], s, e)
local cleared, partial, frames = {}, {}, {}
for _, x in ipairs(all) do
  if x[1] >= s and x[1] + 2 ^ o <= e then
    local w = x[4]
    if w == 3 then w = 0 end
    cleared[#cleared + 1] = x[1] .. ':' .. x[2] .. ':' .. x[3] .. ':' .. w
    frames[#frames + 1] = x[2] .. ':' .. x[3]
    huge_del(KEYS[3], x[1])
  else
    partial[#partial + 1] = x[1]
  end
end
if ARGV[6] ~= '' and #frames > 0 then
  local prev = redis.call('HGET', KEYS[5], 'cleared') or ''
  if prev ~= '' then prev = prev .. ' ' end
  redis.call('HSET', KEYS[5], 'cleared', prev .. table.concat(frames, ' '))
end
return {'OK', cleared, partial, redis.call('SMEMBERS', KEYS[4])}
`,
  }),
  copyHugePmd: script({
    doc: `copy_huge_pmd(), the parent's half, under its page_table_lock lease: the huge entries inside [s, e) are write-protected (pmdp_set_wrprotect: parent and child share the page read-only, a write breaks COW through do_huge_pmd_wp_page) and listed for the child; a w = 3 one is a dead holder's, read-only. KEYS ptlmm ptlmax pmdhuge cpumask; ARGV "owner|token" lockName token s e → {'OK', {"hvpn:pfn:gen:0", ...}, writeProtected, partial {hvpn...}, cpumask} | {'ESTALE'}`,
    models: 'copy_huge_pmd(), mm/huge_memory.c v3.7: the parent (pmdp_set_wrprotect)',
    keys: ['ptlmm', 'ptlmax', 'pmdhuge', 'cpumask'],
    args: { value: LeaseValue, lock: Str, token: Int, start: Int, end: Int },
    reply: oneOf(
      tagged('OK', {
        child: Strs,
        writeProtected: Int,
        partial: z.array(Int),
        cpumask: Strs,
      }),
      tagged('ESTALE'),
    ),
    lua:
      THP_HELPERS +
      `
if not fenced(KEYS[1], KEYS[2], ARGV[2], ARGV[1], tonumber(ARGV[3])) then return {'ESTALE'} end
local s, e = tonumber(ARGV[4]), tonumber(ARGV[5])
local all, o = huge_range(KEYS[3], s, e)
local out, partial, wp = {}, {}, 0
for _, x in ipairs(all) do
  if x[1] >= s and x[1] + 2 ^ o <= e then
    if x[4] ~= 0 then
      if x[4] == 1 then wp = wp + 1 end
      huge_set(KEYS[3], x[1], x[2], x[3], 0, o)
    end
    out[#out + 1] = x[1] .. ':' .. x[2] .. ':' .. x[3] .. ':0'
  else
    partial[#partial + 1] = x[1]
  end
end
return {'OK', out, wp, partial, redis.call('SMEMBERS', KEYS[4])}
`,
  }),
  setHugePmds: script({
    doc: `copy_huge_pmd(), the child's half, while the child is being forked by forker: its huge entries ("hvpn:pfn:gen:w"). KEYS pmdhuge mm; ARGV forker order entries... → n | -1 (not forking it: refused)`,
    models: "copy_huge_pmd(), mm/huge_memory.c v3.7: the child's set_pmd_at",
    keys: ['pmdhuge', 'mm'],
    args: { forker: Str, order: Int.min(1), entries: z.array(VpnPte) },
    reply: Int.describe('n | -1'),
    lua:
      THP_HELPERS +
      `
if redis.call('HGET', KEYS[2], 'state') ~= 'forking' then return -1 end
if redis.call('HGET', KEYS[2], 'forker') ~= ARGV[1] then return -1 end
for i = 3, #ARGV do
  local hv, rest = string.match(ARGV[i], '^(%d+):(.*)$')
  local pfn, gen, w = parse_pte(rest)
  huge_set(KEYS[1], tonumber(hv), pfn, gen, w, tonumber(ARGV[2]))
end
return #ARGV - 2
`,
  }),
  collapseLock: script({
    doc: `collapse_huge_page()'s lock section, first half: with mmap_sem held for write by the caller (semValue), spin_lock(&mm->page_table_lock) as a lease, then every PTE of [hvpn, hvpn + 2^order) must still be the one __collapse_huge_page_isolate read (ptes: "vpn:pfn:gen:w", pte_same) and no huge entry be there; the PTEs are cleared (pmdp_clear_flush of the page-table page: the caller shoots the TLBs down next, still holding the lock, then sets the huge entry with hugePmdSetUnlock, which drops them). Cleared means w = 3 with the small page kept (keys.ts :pte): pte_none to every walker, and put back read-only by a fault once mmap_sem is free again if the collapse dies before its set (its huge record then frees the huge page). KEYS mm pmdhuge pte semW ptlmm ptlmax fence cpumask fenced; ARGV hvpn order owner ttl lockName semValue incarnation ptes... → {'OK', token, cpumask} | {'RETRY'} | {'BUSY'} | {'FENCED'}`,
    models: 'collapse_huge_page(), mm/huge_memory.c v3.7: spin_lock + pmdp_clear_flush',
    keys: ['mm', 'pmdhuge', 'pte', 'semW', 'ptlmm', 'ptlmax', 'fence', 'cpumask', 'fenced'],
    args: {
      hvpn: Int.min(0),
      order: Int.min(1),
      owner: Str,
      ttlMs: Int,
      lock: Str,
      semValue: LeaseValue,
      incarnation: Str,
      ptes: z.array(VpnPte),
    },
    reply: oneOf(
      tagged('OK', { token: Int, cpumask: Strs }),
      tagged('RETRY'),
      tagged('BUSY'),
      tagged('FENCED'),
    ),
    lua:
      THP_HELPERS +
      `
if redis.call('SISMEMBER', KEYS[9], ARGV[7]) == 1 then return {'FENCED'} end
if redis.call('GET', KEYS[4]) ~= ARGV[6] then return {'RETRY'} end
if redis.call('EXISTS', KEYS[5]) == 1 then return {'BUSY'} end
local hv, o = tonumber(ARGV[1]), tonumber(ARGV[2])
if huge_get(KEYS[2], hv) then return {'RETRY'} end
local n = 2 ^ o
if #ARGV - 7 ~= n then return {'RETRY'} end
for i = 8, #ARGV do
  local vpn, rest = string.match(ARGV[i], '^(%d+):(.*)$')
  local pfn, gen, w = pte_get(KEYS[3], tonumber(vpn))
  if not pfn or pte_str(pfn, gen, w) ~= rest then return {'RETRY'} end
end
local token = redis.call('INCR', KEYS[7])
redis.call('SET', KEYS[5], ARGV[3] .. '|' .. token, 'PX', ARGV[4])
redis.call('HSET', KEYS[6], ARGV[5], token)
local ed = pte_edit()
for i = 8, #ARGV do
  local vpn, pfn, gen = string.match(ARGV[i], '^(%d+):(%d+):(%d+):')
  pte_edit_set(ed, tonumber(vpn), tonumber(pfn), tonumber(gen), 3)
end
pte_commit(KEYS[3], ed)
return {'OK', token, redis.call('SMEMBERS', KEYS[8])}
`,
  }),
  hugeFence: script({
    doc: `A huge record ({mem}:pending u:<rec>, mem/thp-scripts.ts) of incarnation ARGV[1], found dead: fence that incarnation off this address space (its fault, lock and set scripts here are refused from now on), then say whether the new page (pfn, gen) is installed — pool 'thp': the huge entry at hvpn names it, or a PTE of [hvpn, hvpn + pages) maps one of its frames (split since); 'hugetlb': the hugetlb entry at hvpn names it (installed: roll forward; else roll back). KEYS pte pmdhuge hugetlb fenced; ARGV incarnation pool hvpn pfn gen pages → 1 | 0`,
    models: 'none: lab crash recovery of a huge page a dead replica allocated (fence, then look)',
    keys: ['pte', 'pmdhuge', 'hugetlb', 'fenced'],
    args: {
      incarnation: Str,
      pool: z.enum(['thp', 'hugetlb']),
      hvpn: Int.min(0),
      pfn: Int,
      gen: Int,
      pages: Int.min(1),
    },
    reply: Bit,
    lua:
      THP_HELPERS +
      `
redis.call('SADD', KEYS[4], ARGV[1])
local hv, pfn, gen, n = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local key = KEYS[2]
if ARGV[2] == 'hugetlb' then key = KEYS[3] end
local v = redis.call('HGET', key, string.format('%d', hv))
if v then
  local p, g = string.match(v, '^(%d+):(%d+):')
  if tonumber(p) == pfn and tonumber(g) == gen then return 1 end
end
if ARGV[2] == 'thp' then
  for _, x in ipairs(pte_range(KEYS[1], hv, hv + n)) do
    if x[2] >= pfn and x[2] < pfn + n and x[3] == gen and x[4] < 4 then return 1 end
  end
end
return 0
`,
  }),
  hugePmdDump: script({
    doc: `Every huge entry of the address space ("hvpn:pfn:gen:w", hvpn order) and the order ('' none): tests, fsck, and the walks that look for entries to split. KEYS pmdhuge → {'OK', order, {entries}}`,
    models: 'none: a dump of the huge entries (tests, diagnostics, fsck)',
    keys: ['pmdhuge'],
    args: {},
    reply: tagged('OK', { order: z.union([Int, z.literal('')]), entries: Strs }),
    lua:
      THP_HELPERS +
      `
local all, o = huge_range(KEYS[1], 0, 2 ^ 53)
local out = {}
for i, x in ipairs(all) do out[i] = x[1] .. ':' .. x[2] .. ':' .. x[3] .. ':' .. x[4] end
return {'OK', o or '', out}
`,
  }),
} as const;
