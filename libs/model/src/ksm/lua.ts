/**
 * Lua helpers of KSM's pages ({mem}:ksm, K[10] of every {mem} script; keys.ts): PG_ksm in a
 * frame record's flags and the stable tree. Spliced into MEM_LUA before free_push, which calls
 * ksm_free on every frame it frees (needs frame_get/frame_set, defined above it).
 */
import { PAGE_FLAGS } from '../keys';

export const KSM_LUA = `
local PG_KSM = ${PAGE_FLAGS.PG_ksm}
-- PageKsm(page): the frame has PG_ksm
local function page_ksm(K, pfn)
  return bit.band(frame_get(K, pfn, 'flags'), PG_KSM) ~= 0
end
-- The live KSM page holding content data (stable_tree_search) → pfn, gen | nil
local function ksm_stable_find(K, data)
  local cur = redis.call('HGET', K[10], 'd' .. data)
  if not cur then return nil end
  local p, g = string.match(cur, '^(%d+):(%d+)$')
  local st, fg, fl = frame_get(K, p, 'state', 'gen', 'flags')
  if st ~= USED or fg ~= tonumber(g) or bit.band(fl, PG_KSM) == 0 then return nil end
  return tonumber(p), tonumber(g)
end
-- A frame being freed leaves the stable tree and loses PG_ksm (free_pages_check: page->mapping
-- is reset; remove_node_from_stable_tree when ksmd next finds the node stale)
local function ksm_free(K, pfn)
  local fl = frame_get(K, pfn, 'flags')
  if bit.band(fl, PG_KSM) == 0 then return end
  frame_set(K, pfn, 'flags', fl - PG_KSM)
  local d = redis.call('HGET', K[10], 'p' .. pfn)
  if not d then return end
  redis.call('HDEL', K[10], 'p' .. pfn)
  local cur = redis.call('HGET', K[10], 'd' .. d)
  if cur and tonumber(string.match(cur, '^(%d+):')) == tonumber(pfn) then
    redis.call('HDEL', K[10], 'd' .. d)
  end
end
`;
