/**
 * Lua helpers of the transparent huge page entries ({p:<pid>}:pmdhuge, keys.ts), prepended to
 * the THP scripts (mm/thp-scripts.ts) and to the fault and walk scripts, which look for a huge
 * entry before the PTE (pmd_trans_huge before pte_offset_map, mm/memory.c v3.7
 * handle_mm_fault). The only code that knows the key's layout.
 */
export const THP_LUA = `
-- The huge page order of the address space's huge entries (nil: it has none)
local function huge_order(key) return tonumber(redis.call('HGET', key, 'o')) end
-- The huge entry covering vpn → hvpn, pfn, gen, w, pages | nil (pmd_trans_huge false)
local function huge_get(key, vpn)
  local o = huge_order(key)
  if not o then return nil end
  local n = 2 ^ o
  local hv = vpn - vpn % n
  local v = redis.call('HGET', key, string.format('%d', hv))
  if not v then return nil end
  local p, g, w = string.match(v, '^(%d+):(%d+):(%d)$')
  if not p then error({err = 'corrupt huge entry ' .. hv .. ': ' .. v}) end
  return hv, tonumber(p), tonumber(g), tonumber(w), n
end
-- set_pmd_at() of a huge entry (order: the lab's hugePageOrder; one order per address space)
local function huge_set(key, hv, pfn, gen, w, order)
  local o = huge_order(key)
  if o and o ~= tonumber(order) then error({err = 'EINVAL huge order ' .. order .. ', not ' .. o}) end
  if hv % (2 ^ order) ~= 0 then error({err = 'EINVAL huge entry at unaligned vpn ' .. hv}) end
  redis.call('HSET', key, 'o', order, string.format('%d', hv), pfn .. ':' .. gen .. ':' .. w)
end
-- pmd_clear() of the huge entry at hv (the key goes with its last entry)
local function huge_del(key, hv)
  redis.call('HDEL', key, string.format('%d', hv))
  if redis.call('HLEN', key) <= 1 then redis.call('DEL', key) end
end
-- Every huge entry whose range meets [s, e): {{hv, pfn, gen, w}, ...} in hv order, and the order
local function huge_range(key, s, e)
  local o = huge_order(key)
  local out = {}
  if not o then return out, nil end
  local h = redis.call('HGETALL', key)
  for j = 1, #h, 2 do
    if h[j] ~= 'o' then
      local hv = tonumber(h[j])
      local p, g, w = string.match(h[j + 1], '^(%d+):(%d+):(%d)$')
      if hv and p and hv < e and hv + 2 ^ o > s then
        out[#out + 1] = {hv, tonumber(p), tonumber(g), tonumber(w)}
      end
    end
  end
  table.sort(out, function(a, b) return a[1] < b[1] end)
  return out, o
end
`;
