-- Trusted set-up of one sandbox, run once per Lua state with the real
-- globals. It returns the table every call's environment inherits from,
-- the hook that points the `kv` functions at the running call, and the
-- environment metatable. User code never sees the real globals.
local doomed, set_abort, log = ...

local real_pcall, real_xpcall, real_setmetatable, real_load = pcall, xpcall, setmetatable, load
local rawget, type, error, tostring, next, pairs = rawget, type, error, tostring, next, pairs
local tpack, tconcat = table.pack, table.concat
local spack, sunpack = string.pack, string.unpack

-- string.dump would hand out bytecode, which `load` must never take; and
-- strings share one metatable whose __index is the real string table, so
-- hide it or a call could change `string` for every later call.
string.dump = nil
getmetatable("").__metatable = false

-- A read-only view of a library: writes fail, rawset is not offered, and
-- the metatable is hidden so it cannot be swapped.
local function ro(name, t)
  local copy = {}
  for k, v in pairs(t) do copy[k] = v end
  return real_setmetatable({}, {
    __index = copy,
    __newindex = function() error(name .. " is read-only", 2) end,
    __pairs = function() return next, copy, nil end,
    __metatable = false,
  })
end

-- A budget overrun, an abort or a store failure must end the call even
-- under pcall, else a loop of pcalls could run forever.
local function pass(ok, ...)
  if not ok then
    local e = ...
    if doomed() or e == "not enough memory" then error(e, 0) end
  end
  return ok, ...
end

local SAFE = {}
local ENV_MT = { __index = SAFE, __metatable = false }

for _, k in ipairs({ "assert", "error", "ipairs", "next", "pairs", "select", "tonumber",
  "tostring", "type", "rawequal", "rawget", "rawlen", "getmetatable" }) do
  SAFE[k] = _G[k]
end
SAFE._VERSION = _VERSION
SAFE.pcall = function(f, ...) return pass(real_pcall(f, ...)) end
SAFE.xpcall = function(f, h, ...) return pass(real_xpcall(f, h, ...)) end
-- A finalizer would run during some later call, outside its own budget.
SAFE.setmetatable = function(t, mt)
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    error("__gc metamethods are not allowed", 2)
  end
  return real_setmetatable(t, mt)
end
SAFE.load = function(chunk, name, _mode, env)
  if type(chunk) ~= "string" then error("load takes source text only", 2) end
  if chunk:byte(1) == 27 then error("binary chunks are refused", 2) end
  return real_load(chunk, name, "t", env or real_setmetatable({}, ENV_MT))
end
SAFE.string = ro("string", string)
SAFE.table = ro("table", table)
SAFE.math = ro("math", math)
SAFE.utf8 = ro("utf8", utf8)

-- Little-endian integers, as Arakoon's Arith64 stores counters. Lua
-- integers are 64-bit signed: a u64 above 2^63 - 1 reads as negative.
local le = {}
function le.u32(n) return spack("<I4", n) end
function le.u64(n) return spack("<i8", n) end
function le.to_u32(s)
  if type(s) ~= "string" or #s ~= 4 then error("le.to_u32 needs a 4-byte string", 2) end
  return (sunpack("<I4", s))
end
function le.to_u64(s)
  if type(s) ~= "string" or #s ~= 8 then error("le.to_u64 needs an 8-byte string", 2) end
  return (sunpack("<i8", s))
end
SAFE.le = ro("le", le)

-- The running call's recorder, set by the host around each call.
local current = nil
local kv = {}
for _, op in ipairs({ "get", "get_entry", "exists", "range", "prefix", "set", "delete",
  "delete_prefix" }) do
  kv[op] = function(...)
    if current == nil then error("kv." .. op .. " outside a call", 2) end
    local ok, r = current(op, ...)
    -- Level 2: the message names the script line that called kv.
    if not ok then error(r, 2) end
    return r
  end
end
SAFE.kv = ro("kv", kv)

local nacre = {}
function nacre.abort(msg)
  set_abort()
  error(tostring(msg), 2)
end
function nacre.check(cond, msg)
  if not cond then
    set_abort()
    error(tostring(msg or "check failed"), 2)
  end
  return cond
end
-- The revision (applied log index) this call reads at.
function nacre.revision()
  if current == nil then error("nacre.revision outside a call", 2) end
  local ok, r = current("revision")
  if not ok then error(r, 2) end
  return r
end
-- Fences this call's writes: they apply only while the key under
-- `prefix` with the lowest create revision (a lock's holder) was created
-- at `token`; otherwise the call fails with `fenced`.
function nacre.fence(prefix, token)
  if current == nil then error("nacre.fence outside a call", 2) end
  local ok, r = current("fence", prefix, token)
  if not ok then error(r, 2) end
  return r
end
function nacre.log(...)
  local t = tpack(...)
  for i = 1, t.n do t[i] = tostring(t[i]) end
  log(tconcat(t, "\t"))
end
SAFE.nacre = ro("nacre", nacre)
SAFE.print = nacre.log

local function set_current(f) current = f end
return ENV_MT, set_current
