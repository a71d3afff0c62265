-- A counter stored as 8 little-endian bytes, as Arakoon's Arith64 plugin
-- kept it.
--
--   nacre script put arith64 examples/scripts/arith64.lua
--   nacre call arith64 incr hits        -> 1
--   nacre call arith64 incr hits 10     -> 11
--   nacre call arith64 get hits         -> 11   (read-only: not proposed)

local function load(key)
  local v = kv.get(key)
  if v == nil then return 0 end
  return le.to_u64(v)
end

-- Adds `by` (default 1) and returns the new value. The read of `key`
-- becomes a version guard, so concurrent increments never lose an update:
-- the one that loses the race runs again on the new value.
function incr(key, by)
  local n = 1
  if by ~= nil then
    n = tonumber(by)
    nacre.check(n ~= nil and math.type(n) == "integer", "increment must be an integer")
  end
  local v = load(key) + n
  kv.set(key, le.u64(v))
  return v
end

function get(key)
  return load(key)
end
