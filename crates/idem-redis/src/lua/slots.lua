-- SLOTS.*. KEYS: 1 resource (hash: size, and one field per taken slot,
-- named by its decimal index, holding the holder). ARGV[1] is the operation.
-- HMGET/HDEL go in chunks: Lua's unpack() fails on very long argument lists.
local H = KEYS[1]
local op = ARGV[1]
local CHUNK = 1000

-- The holders of slots first..last, index i at position i - first + 1 (false when free).
local function read(first, last)
  local out = {}
  local i = first
  while i <= last do
    local j = math.min(last, i + CHUNK - 1)
    local fields = {}
    for s = i, j do
      fields[#fields + 1] = fmt(s)
    end
    local v = redis.call('HMGET', H, unpack(fields))
    for n = 1, #fields do
      out[#out + 1] = v[n]
    end
    i = j + 1
  end
  return out
end

if op == 'reserve' then
  -- ARGV: 2 first, 3 last, 4 holder, 5 SIZE or '', 6 default SIZE
  local first, last, holder = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
  local size = redis.call('HGET', H, 'size')
  local creating = size == false
  if creating then
    size = ARGV[5] ~= '' and ARGV[5] or ARGV[6]
  elseif ARGV[5] ~= '' and tonumber(ARGV[5]) ~= tonumber(size) then
    -- SIZE for an existing resource must be its size (docs/commands.md).
    return err('ERR', 'SLOTS.RESERVE: SIZE ' .. ARGV[5] .. " differs from the resource's size " .. size)
  end
  if last >= tonumber(size) then
    return err('ERR', 'SLOTS.RESERVE: slot ' .. fmt(last) .. ' is outside SIZE ' .. size .. ' of this resource')
  end
  local cur = read(first, last)
  local conflict = { 'conflict' }
  for n = 1, #cur do
    if cur[n] and cur[n] ~= holder then
      conflict[#conflict + 1] = fmt(first + n - 1)
      conflict[#conflict + 1] = cur[n]
    end
  end
  if #conflict > 1 then
    return conflict
  end
  if creating then
    redis.call('HSET', H, 'size', size)
  end
  local i = first
  while i <= last do
    local j = math.min(last, i + CHUNK - 1)
    local kv = {}
    for s = i, j do
      kv[#kv + 1] = fmt(s)
      kv[#kv + 1] = holder
    end
    redis.call('HSET', H, unpack(kv))
    i = j + 1
  end
  return { 'reserved' }
elseif op == 'release' then
  -- ARGV: 2 first, 3 last, 4 holder
  local first, last, holder = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
  local size = tonumber(redis.call('HGET', H, 'size') or '0')
  if size == 0 then
    return 0
  end
  last = math.min(last, size - 1)
  if first > last then
    return 0
  end
  local cur = read(first, last)
  local freed, batch = 0, {}
  for n = 1, #cur do
    if cur[n] == holder then
      batch[#batch + 1] = fmt(first + n - 1)
      freed = freed + 1
      if #batch >= CHUNK then
        redis.call('HDEL', H, unpack(batch))
        batch = {}
      end
    end
  end
  if #batch > 0 then
    redis.call('HDEL', H, unpack(batch))
  end
  -- A resource with no held slot is forgotten (docs/commands.md), so that
  -- its size may be chosen again: only the 'size' field is left then.
  if freed > 0 and redis.call('HLEN', H) <= 1 then
    redis.call('DEL', H)
  end
  return freed
elseif op == 'get' then
  local size = tonumber(redis.call('HGET', H, 'size') or '0')
  if size == 0 then
    return {}
  end
  return read(0, size - 1)
end
return err('ERR', 'unknown slots operation')
