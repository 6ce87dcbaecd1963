/**
 * Lua helpers of the page tables ({p:<pid>}:pte, keys.ts), prepended to every mm script that
 * reads or writes a PTE (mm/scripts.ts). They are the only code that knows the layout: every
 * script, and through them the Store, sees a PTE as (pfn, gen, w) and replies "pfn:gen:w".
 *
 * Layout: one field per page-table page (pmd index, pmdIndexOf), its value the page's PTEs
 * packed: a 2-byte big-endian index `lo` of the first entry stored, then fixed-width entries
 * lo, lo + 1, ... up to the last entry that is not pte_none. An entry (PTE_BYTES = 9):
 *   pfn   u32 big-endian (≤ PTE_FIELD_MAX)
 *   gen   u32 big-endian (≤ PTE_FIELD_MAX)
 *   flags u8: bits 0-1 w (1 writable, 0 read-only, 2 PROT_NONE, 3 cleared by a COW in flight),
 *         bit 2 present-in-the-table (set on every stored PTE), bits 3-6 reserved for dirty,
 *         accessed, special and huge (0 today; a reader ignores them), bit 7 zero.
 * An all-zero entry is pte_none. Invariants: lo + entries ≤ PTRS_PER_PTE; the first and the last
 * stored entries are not pte_none (a page is trimmed at both ends when one is cleared); a page
 * with no PTE left is no field at all (HDEL: the page-table page is dropped; :pmds keeps its
 * index until exit_mmap, as today: a superset of the pages that hold PTEs). A sparse address
 * space pays for the span from its page's first to its last PTE, never for the whole 512.
 */

/** bytes per packed PTE */
export const PTE_BYTES = 9;
/** the largest pfn or gen a PTE holds (u32) */
export const PTE_FIELD_MAX = 0xffff_ffff;

export const PTE_LUA = `
local PTRS_PER_PTE = 512
local PTE_BYTES = ${PTE_BYTES}
local PTE_FIELD_MAX = ${PTE_FIELD_MAX}
local PTE_PRESENT = 4
local PTE_NONE = string.rep(string.char(0), PTE_BYTES)
local function pte_bad(what) error({err = 'EINVAL ' .. what}) end
local function pte_field_ok(x) return x and x >= 0 and x <= PTE_FIELD_MAX and x % 1 == 0 end
-- one packed entry (9 bytes) of a present PTE
local function pte_enc(pfn, gen, w)
  if not pte_field_ok(pfn) or not pte_field_ok(gen) or not (w == 0 or w == 1 or w == 2 or w == 3) then
    pte_bad('PTE ' .. tostring(pfn) .. ':' .. tostring(gen) .. ':' .. tostring(w) .. ' out of range')
  end
  return struct.pack('>I4I4B', pfn, gen, PTE_PRESENT + w)
end
-- → pfn, gen, w of a packed entry; nil for pte_none
local function pte_dec(raw)
  if raw == PTE_NONE then return nil end
  local pfn, gen, fl = struct.unpack('>I4I4B', raw)
  if fl >= 128 or math.floor(fl / 4) % 2 ~= 1 then pte_bad('corrupt PTE flags ' .. fl) end
  return pfn, gen, fl % 4
end
-- the reply form of a PTE
local function pte_str(pfn, gen, w) return pfn .. ':' .. gen .. ':' .. w end
-- a page-table page: its string, the index of its first entry, its number of entries
-- (nil, 0, 0: no such page). A page that breaks the layout is an error, never read past.
local function ptp_parse(s, pmd)
  if not s then return nil, 0, 0 end
  local n = (#s - 2) / PTE_BYTES
  local lo = 0
  if #s >= 2 then lo = struct.unpack('>I2', s) end
  if n < 1 or n % 1 ~= 0 or lo + n > PTRS_PER_PTE then pte_bad('corrupt page-table page ' .. pmd) end
  return s, lo, n
end
local function ptp_get(key, pmd) return ptp_parse(redis.call('HGET', key, pmd), pmd) end
local function ptp_entry(s, i) return string.sub(s, 3 + i * PTE_BYTES, 2 + (i + 1) * PTE_BYTES) end
-- s with its pte_none entries at both ends dropped (nil: none left)
local function ptp_trim(s)
  local n = (#s - 2) / PTE_BYTES
  local a, b = 0, n - 1
  while a <= b and ptp_entry(s, a) == PTE_NONE do a = a + 1 end
  if a > b then return nil end
  while ptp_entry(s, b) == PTE_NONE do b = b - 1 end
  if a == 0 and b == n - 1 then return s end
  local lo = struct.unpack('>I2', s)
  return struct.pack('>I2', lo + a) .. string.sub(s, 3 + a * PTE_BYTES, 2 + (b + 1) * PTE_BYTES)
end
-- page s (lo, n) with entry idx (0..511) replaced by raw (PTE_NONE: cleared) → the new page | nil
local function ptp_with(s, lo, n, idx, raw)
  if not s then
    if raw == PTE_NONE then return nil end
    return struct.pack('>I2', idx) .. raw
  end
  local i = idx - lo
  if i >= 0 and i < n then
    local off = 3 + i * PTE_BYTES
    s = string.sub(s, 1, off - 1) .. raw .. string.sub(s, off + PTE_BYTES)
    if raw == PTE_NONE and (i == 0 or i == n - 1) then return ptp_trim(s) end
    return s
  end
  if raw == PTE_NONE then return s end
  if i < 0 then
    return struct.pack('>I2', idx) .. raw .. string.rep(PTE_NONE, -i - 1) .. string.sub(s, 3)
  end
  return s .. string.rep(PTE_NONE, i - n) .. raw
end
local function ptp_put(key, pmd, s)
  if s then redis.call('HSET', key, pmd, s) else redis.call('HDEL', key, pmd) end
end
-- The PTE of vpn: pfn, gen, w, or nil (pte_none)
local function pte_get(key, vpn)
  local pmd = math.floor(vpn / PTRS_PER_PTE)
  local s, lo, n = ptp_get(key, pmd)
  local i = vpn % PTRS_PER_PTE - lo
  if not s or i < 0 or i >= n then return nil end
  return pte_dec(ptp_entry(s, i))
end
-- set_pte_at(): the PTE of vpn becomes (pfn, gen, w)
local function pte_set(key, vpn, pfn, gen, w)
  local raw = pte_enc(pfn, gen, w)
  local pmd = math.floor(vpn / PTRS_PER_PTE)
  local s, lo, n = ptp_get(key, pmd)
  ptp_put(key, pmd, ptp_with(s, lo, n, vpn % PTRS_PER_PTE, raw))
end
-- pte_clear(): the PTE of vpn becomes pte_none (a page left empty is dropped)
local function pte_clear(key, vpn)
  local pmd = math.floor(vpn / PTRS_PER_PTE)
  local s, lo, n = ptp_get(key, pmd)
  if s then ptp_put(key, pmd, ptp_with(s, lo, n, vpn % PTRS_PER_PTE, PTE_NONE)) end
end
-- The present PTEs of [s, e) (any number of pages), in vpn order: {{vpn, pfn, gen, w}, ...}
local function pte_range(key, s, e)
  local out = {}
  local pmd = math.floor(s / PTRS_PER_PTE)
  while pmd * PTRS_PER_PTE < e do
    local str, lo, n = ptp_get(key, pmd)
    if str then
      local b0 = pmd * PTRS_PER_PTE + lo
      for vpn = math.max(s, b0), math.min(e, b0 + n) - 1 do
        local pfn, gen, w = pte_dec(ptp_entry(str, vpn - b0))
        if pfn then out[#out + 1] = {vpn, pfn, gen, w} end
      end
    end
    pmd = pmd + 1
  end
  return out
end
-- An edit of many PTEs, written page by page in one pass each (pte_commit): pte_edit_set and
-- pte_edit_clear record, nothing is written before the commit. Reads in between see the old PTEs.
local function pte_edit() return {} end
local function pte_edit_put(ed, vpn, raw)
  local pmd = math.floor(vpn / PTRS_PER_PTE)
  local ch = ed[pmd]
  if not ch then ch = {}; ed[pmd] = ch end
  ch[vpn % PTRS_PER_PTE] = raw
end
local function pte_edit_set(ed, vpn, pfn, gen, w) pte_edit_put(ed, vpn, pte_enc(pfn, gen, w)) end
local function pte_edit_clear(ed, vpn) pte_edit_put(ed, vpn, PTE_NONE) end
local function pte_commit(key, ed)
  for pmd, ch in pairs(ed) do
    local s, lo, n = ptp_get(key, pmd)
    local count = 0
    for _ in pairs(ch) do count = count + 1 end
    if count <= 4 then
      -- a few PTEs: splice them in, one copy of the page each
      for idx, raw in pairs(ch) do
        s = ptp_with(s, lo, n, idx, raw)
        s, lo, n = ptp_parse(s, pmd)
      end
    else
      -- many: rebuild the page once
      local e = {}
      for i = 0, n - 1 do e[lo + i] = ptp_entry(s, i) end
      for idx, raw in pairs(ch) do e[idx] = raw end
      local a, b = nil, nil
      for idx = 0, PTRS_PER_PTE - 1 do
        if e[idx] and e[idx] ~= PTE_NONE then
          if not a then a = idx end
          b = idx
        end
      end
      s = nil
      if a then
        local parts = {struct.pack('>I2', a)}
        for idx = a, b do parts[#parts + 1] = e[idx] or PTE_NONE end
        s = table.concat(parts)
      end
    end
    ptp_put(key, pmd, s)
  end
end
-- Every present PTE of the address space: {{vpn, pfn, gen, w}, ...} (pages in no order), and
-- the pmd indexes of the pages that break the layout (read, never written).
local function pte_all(key)
  local out, bad = {}, {}
  local h = redis.call('HGETALL', key)
  for j = 1, #h, 2 do
    local pmd = tonumber(h[j])
    local got = {}
    local ok = pcall(function()
      if not pmd or pmd < 0 or pmd % 1 ~= 0 then pte_bad('page-table page ' .. h[j]) end
      local s, lo, n = ptp_parse(h[j + 1], h[j])
      for i = 0, n - 1 do
        local pfn, gen, w = pte_dec(ptp_entry(s, i))
        if pfn then got[#got + 1] = {pmd * PTRS_PER_PTE + lo + i, pfn, gen, w} end
      end
    end)
    if ok then
      for _, p in ipairs(got) do out[#out + 1] = p end
    else
      bad[#bad + 1] = h[j]
    end
  end
  return out, bad
end
-- Whether a present PTE of the address space maps (pfn, gen): a scan of the packed pages
local function pte_maps(key, pfn, gen)
  local head = struct.pack('>I4I4', pfn, gen)
  for _, s in ipairs(redis.call('HVALS', key)) do
    local from = 3
    while true do
      local at = string.find(s, head, from, true)
      if not at then break end
      if (at - 3) % PTE_BYTES == 0 and string.byte(s, at + 8) ~= 0 then return true end
      from = at + 1
    end
  end
  return false
end
`;
