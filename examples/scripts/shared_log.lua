-- The storage side of a CORFU-style shared log: write-once positions
-- guarded by an epoch. A sequencer hands out positions; clients write
-- them here; a new sequencer seals the old epoch, learns the highest
-- position written, and carries on from there.
--
--   nacre call shared_log write LOG EPOCH POS DATA
--   nacre call shared_log read LOG POS
--   nacre call shared_log seal LOG NEW_EPOCH       -> highest position, or -1
--
-- Keys: LOG/epoch and LOG/tail hold 8 little-endian bytes; LOG/p/POS
-- (POS zero-padded to 20 digits, so keys sort by position) holds the data.

local function int(s, what)
  local n = tonumber(s)
  nacre.check(n ~= nil and math.type(n) == "integer" and n >= 0, what .. " must be a non-negative integer")
  return n
end

local function u64(key, default)
  local v = kv.get(key)
  if v == nil then return default end
  return le.to_u64(v)
end

local function pos_key(log, pos)
  return string.format("%s/p/%020d", log, pos)
end

function write(log, epoch, pos, data)
  epoch = int(epoch, "epoch")
  pos = int(pos, "position")
  nacre.check(data ~= nil, "data is required")
  local current = u64(log .. "/epoch", 0)
  nacre.check(epoch >= current, "stale epoch " .. epoch .. ", the log is sealed at " .. current)
  nacre.check(epoch == current, "unknown epoch " .. epoch .. ", the log is at " .. current)
  local key = pos_key(log, pos)
  nacre.check(not kv.exists(key), "position " .. pos .. " already written")
  kv.set(key, data)
  -- The tail makes seal cheap; it also makes writes of different
  -- positions conflict (and retry) on this one key.
  if u64(log .. "/tail", -1) < pos then
    kv.set(log .. "/tail", le.u64(pos))
  end
end

function read(log, pos)
  return kv.get(pos_key(log, int(pos, "position")))
end

function seal(log, epoch)
  epoch = int(epoch, "epoch")
  local current = u64(log .. "/epoch", 0)
  nacre.check(epoch > current, "seal needs an epoch above " .. current)
  kv.set(log .. "/epoch", le.u64(epoch))
  return u64(log .. "/tail", -1)
end
