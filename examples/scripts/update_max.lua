-- Keeps the largest value ever offered for a key (8 little-endian bytes).
--
--   nacre call update_max update_max high-water 17
--
-- Returns the maximum after the call. An offer at or below the current
-- maximum writes nothing, so it is answered without a log entry.
function update_max(key, value)
  local n = tonumber(value)
  nacre.check(n ~= nil and math.type(n) == "integer", "value must be an integer")
  local cur = kv.get(key)
  if cur ~= nil and le.to_u64(cur) >= n then
    return le.to_u64(cur)
  end
  kv.set(key, le.u64(n))
  return n
end
