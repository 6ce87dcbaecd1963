/**
 * Lua helpers of the page tables ({p:<pid>}:pte, keys.ts), prepended to every mm script that
 * reads or writes a PTE (mm/scripts.ts). They are the only code that knows the layout: every
 * script, and through them the Store, sees a PTE as (pfn, gen, w) and replies "pfn:gen:w".
 *
 * Layout: a page-table page (512 PTEs, pmdIndexOf) is stored as PTRS_PER_PTE / PTES_PER_FIELD
 * fields of the :pte hash, field q holding the PTEs of vpns [q * PTES_PER_FIELD, (q + 1) *
 * PTES_PER_FIELD) (so the page of field q is q * PTES_PER_FIELD / 512), packed: a 2-byte
 * big-endian index `lo` of the first entry stored, then fixed-width entries lo, lo + 1, ... up
 * to the last entry that is not pte_none. An entry (PTE_BYTES = 9):
 *   pfn   u32 big-endian (≤ PTE_FIELD_MAX)
 *   gen   u32 big-endian (≤ PTE_FIELD_MAX)
 *   flags u8: bits 0-1 w (1 writable, 0 read-only, 2 PROT_NONE, 3 cleared by a COW in flight),
 *         bit 2 present-in-the-table (set on every stored PTE), bit 3 a swap entry (not present
 *         to any walker: pfn is the swap slot and gen the slot's generation, bits 0-1 are 0;
 *         read as w = 4: the swp_entry_t a PTE holds once try_to_unmap_one swapped its page
 *         out) — or, with bit 0 set, a file PTE (w = 5: pte_file of a nonlinear mapping, pfn
 *         the file page to map there, gen 0), bit 4 young (the accessed bit: set by every write of a present PTE — pte_mkyoung
 *         at install, and the page walker's fill — cleared by ptep_clear_flush_young), bits 5-6
 *         reserved for special and huge (0 today; a reader ignores them), bit 7 zero.
 * An all-zero entry is pte_none. Invariants: lo + entries ≤ PTES_PER_FIELD; the first and the
 * last stored entries are not pte_none (a field is trimmed at both ends when one is cleared); a
 * field with no PTE left is no field at all (HDEL; :pmds keeps the page's index until
 * exit_mmap, as today: a superset of the pages that hold PTEs). A sparse address space pays for
 * the span from a field's first to its last PTE, never for the whole page.
 *
 * Why a page is cut into fields: Redis cannot write part of a hash field, so a PTE write copies
 * its whole field through Lua (read, splice, write back) — cost and Lua garbage grow with the
 * field's size: measured in the Lua loop of a script, a pte_get + pte_set pair took ~6x an old
 * per-PTE HGET + HSET with 512 PTEs a field and 1-2x with 64, while the bytes per PTE hardly
 * change (one hash entry per 64 PTEs, under 1 B/PTE).
 */

/** PTEs per field of the :pte hash (a power of two dividing PTRS_PER_PTE) */
export const PTES_PER_FIELD = 64;
/** bytes per packed PTE */
export const PTE_BYTES = 9;
/** the largest pfn or gen a PTE holds (u32) */
export const PTE_FIELD_MAX = 0xffff_ffff;

export const PTE_LUA = `
local PTRS_PER_PTE = 512
local PTES_PER_FIELD = ${PTES_PER_FIELD}
local PTE_BYTES = ${PTE_BYTES}
local PTE_FIELD_MAX = ${PTE_FIELD_MAX}
local PTE_PRESENT = 4
-- w of a swap entry (flag bit 3): pfn is the swap slot, gen its generation
local PTE_SWAP = 4
-- w of a file PTE (flag bits 3 and 0: pte_file, a nonlinear mapping's non-present entry): pfn is
-- the file page to map there (pgoff_to_pte), gen 0
local PTE_FILE = 5
-- the young (accessed) bit of a present PTE (flag bit 4)
local PTE_YOUNG = 16
local PTE_NONE = string.rep(string.char(0), PTE_BYTES)
local function pte_bad(what) error({err = 'EINVAL ' .. what}) end
local function pte_field_ok(x) return x and x >= 0 and x <= PTE_FIELD_MAX and x % 1 == 0 end
-- one packed entry (9 bytes) of a present PTE
local function pte_enc(pfn, gen, w)
  if not pte_field_ok(pfn) or not pte_field_ok(gen) or not (w == 0 or w == 1 or w == 2 or w == 3 or w == 4 or w == 5) then
    pte_bad('PTE ' .. tostring(pfn) .. ':' .. tostring(gen) .. ':' .. tostring(w) .. ' out of range')
  end
  if w == PTE_SWAP then return struct.pack('>I4I4B', pfn, gen, PTE_PRESENT + 8) end
  if w == PTE_FILE then return struct.pack('>I4I4B', pfn, 0, PTE_PRESENT + 8 + 1) end
  if w == 0 or w == 1 then return struct.pack('>I4I4B', pfn, gen, PTE_PRESENT + PTE_YOUNG + w) end
  return struct.pack('>I4I4B', pfn, gen, PTE_PRESENT + w)
end
-- → pfn, gen, w of a packed entry; nil for pte_none
local function pte_dec(raw)
  if raw == PTE_NONE then return nil end
  local pfn, gen, fl = struct.unpack('>I4I4B', raw)
  if fl >= 128 or math.floor(fl / 4) % 2 ~= 1 then pte_bad('corrupt PTE flags ' .. fl) end
  if math.floor(fl / 8) % 2 == 1 then
    if fl % 4 == 1 then return pfn, gen, PTE_FILE end
    if fl % 4 ~= 0 then pte_bad('corrupt swap PTE flags ' .. fl) end
    return pfn, gen, PTE_SWAP
  end
  return pfn, gen, fl % 4
end
-- the reply form of a PTE
local function pte_str(pfn, gen, w) return pfn .. ':' .. gen .. ':' .. w end
-- What put_page()/get_page() owe for a PTE that goes or is copied: "pfn:gen" of its frame,
-- "-slot:gen" for a swap entry (swap_free()/swap_duplicate() of the slot: mem/lua.ts), nil for
-- the zero page (never counted)
local function frame_ref(pfn, gen, w)
  if w == PTE_SWAP then return '-' .. pfn .. ':' .. gen end
  if w == PTE_FILE then return nil end
  if pfn == 0 then return nil end
  return pfn .. ':' .. gen
end
-- a field of packed PTEs: its string, the index of its first entry, its number of entries
-- (nil, 0, 0: no such field). One that breaks the layout is an error, never read past.
local function ptp_parse(s, fld)
  if not s then return nil, 0, 0 end
  local n = (#s - 2) / PTE_BYTES
  local lo = 0
  if #s >= 2 then lo = struct.unpack('>I2', s) end
  if n < 1 or n % 1 ~= 0 or lo + n > PTES_PER_FIELD then pte_bad('corrupt page-table field ' .. fld) end
  return s, lo, n
end
local function ptp_get(key, fld) return ptp_parse(redis.call('HGET', key, fld), fld) end
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
-- field s (lo, n) with entry idx (0..PTES_PER_FIELD-1) replaced by raw (PTE_NONE: cleared)
-- → the new field | nil (no PTE left)
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
local function ptp_put(key, fld, s)
  if s then redis.call('HSET', key, fld, s) else redis.call('HDEL', key, fld) end
end
-- The PTE of vpn: pfn, gen, w, or nil (pte_none)
local function pte_get(key, vpn)
  local fld = math.floor(vpn / PTES_PER_FIELD)
  local s, lo, n = ptp_get(key, fld)
  local i = vpn % PTES_PER_FIELD - lo
  if not s or i < 0 or i >= n then return nil end
  return pte_dec(ptp_entry(s, i))
end
-- Models: page_check_address(), mm/rmap.c v3.7 — the w of the PTE of vpn if it is present and
-- maps frame (pfn, gen) (not pte_none, a COW's cleared PTE or a swap entry), else nil
local function page_check_address(key, vpn, pfn, gen)
  local p, g, w = pte_get(key, vpn)
  if not p or w == 3 or w >= PTE_SWAP or p ~= pfn or g ~= gen then return nil end
  return w
end
-- Whether the PTE of vpn is young (its accessed bit)
local function pte_young(key, vpn)
  local fld = math.floor(vpn / PTES_PER_FIELD)
  local s, lo, n = ptp_get(key, fld)
  local i = vpn % PTES_PER_FIELD - lo
  if not s or i < 0 or i >= n then return false end
  return math.floor(string.byte(ptp_entry(s, i), PTE_BYTES) / PTE_YOUNG) % 2 == 1
end
-- pte_mkold(): the PTE of vpn (present) loses its accessed bit, nothing else changes
local function pte_mkold(key, vpn)
  local fld = math.floor(vpn / PTES_PER_FIELD)
  local s, lo, n = ptp_get(key, fld)
  local i = vpn % PTES_PER_FIELD - lo
  if not s or i < 0 or i >= n then return end
  local raw = ptp_entry(s, i)
  local fl = string.byte(raw, PTE_BYTES)
  if math.floor(fl / PTE_YOUNG) % 2 == 0 then return end
  raw = string.sub(raw, 1, PTE_BYTES - 1) .. string.char(fl - PTE_YOUNG)
  ptp_put(key, fld, ptp_with(s, lo, n, vpn % PTES_PER_FIELD, raw))
end
-- set_pte_at(): the PTE of vpn becomes (pfn, gen, w)
local function pte_set(key, vpn, pfn, gen, w)
  local raw = pte_enc(pfn, gen, w)
  local fld = math.floor(vpn / PTES_PER_FIELD)
  local s, lo, n = ptp_get(key, fld)
  ptp_put(key, fld, ptp_with(s, lo, n, vpn % PTES_PER_FIELD, raw))
end
-- pte_clear(): the PTE of vpn becomes pte_none (a field left empty is dropped)
local function pte_clear(key, vpn)
  local fld = math.floor(vpn / PTES_PER_FIELD)
  local s, lo, n = ptp_get(key, fld)
  if s then ptp_put(key, fld, ptp_with(s, lo, n, vpn % PTES_PER_FIELD, PTE_NONE)) end
end
-- The present PTEs of [s, e) (any number of fields), in vpn order: {{vpn, pfn, gen, w}, ...}
local function pte_range(key, s, e)
  local out = {}
  local fld = math.floor(s / PTES_PER_FIELD)
  while fld * PTES_PER_FIELD < e do
    local str, lo, n = ptp_get(key, fld)
    if str then
      local b0 = fld * PTES_PER_FIELD + lo
      for vpn = math.max(s, b0), math.min(e, b0 + n) - 1 do
        local pfn, gen, w = pte_dec(ptp_entry(str, vpn - b0))
        if pfn then out[#out + 1] = {vpn, pfn, gen, w} end
      end
    end
    fld = fld + 1
  end
  return out
end
-- An edit of many PTEs, written field by field in one pass each (pte_commit): pte_edit_set and
-- pte_edit_clear record, nothing is written before the commit. Reads in between see the old PTEs.
local function pte_edit() return {} end
local function pte_edit_put(ed, vpn, raw)
  local fld = math.floor(vpn / PTES_PER_FIELD)
  local ch = ed[fld]
  if not ch then ch = {}; ed[fld] = ch end
  ch[vpn % PTES_PER_FIELD] = raw
end
local function pte_edit_set(ed, vpn, pfn, gen, w) pte_edit_put(ed, vpn, pte_enc(pfn, gen, w)) end
local function pte_edit_clear(ed, vpn) pte_edit_put(ed, vpn, PTE_NONE) end
local function pte_commit(key, ed)
  for fld, ch in pairs(ed) do
    local s, lo, n = ptp_get(key, fld)
    local count = 0
    for _ in pairs(ch) do count = count + 1 end
    if count <= 4 then
      -- a few PTEs: splice them in, one copy of the field each
      for idx, raw in pairs(ch) do
        s = ptp_with(s, lo, n, idx, raw)
        s, lo, n = ptp_parse(s, fld)
      end
    else
      -- many: rebuild the field once
      local e = {}
      for i = 0, n - 1 do e[lo + i] = ptp_entry(s, i) end
      for idx, raw in pairs(ch) do e[idx] = raw end
      local a, b = nil, nil
      for idx = 0, PTES_PER_FIELD - 1 do
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
    ptp_put(key, fld, s)
  end
end
-- Every present PTE of the address space: {{vpn, pfn, gen, w}, ...} (fields in no order), and
-- the names of the fields that break the layout (read, never written).
local function pte_all(key)
  local out, bad = {}, {}
  local h = redis.call('HGETALL', key)
  for j = 1, #h, 2 do
    local fld = tonumber(h[j])
    local got = {}
    local ok = pcall(function()
      if not fld or fld < 0 or fld % 1 ~= 0 then pte_bad('page-table field ' .. h[j]) end
      local s, lo, n = ptp_parse(h[j + 1], h[j])
      for i = 0, n - 1 do
        local pfn, gen, w = pte_dec(ptp_entry(s, i))
        if pfn then got[#got + 1] = {fld * PTES_PER_FIELD + lo + i, pfn, gen, w} end
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
-- Whether a present PTE of the address space maps (pfn, gen): a scan of the packed fields (a
-- swap entry of the same numbers maps no frame)
local function pte_maps(key, pfn, gen)
  local head = struct.pack('>I4I4', pfn, gen)
  for _, s in ipairs(redis.call('HVALS', key)) do
    local from = 3
    while true do
      local at = string.find(s, head, from, true)
      if not at then break end
      local fl = string.byte(s, at + 8)
      if (at - 3) % PTE_BYTES == 0 and fl ~= 0 and math.floor(fl / 8) % 2 == 0 then return true end
      from = at + 1
    end
  end
  return false
end
`;
