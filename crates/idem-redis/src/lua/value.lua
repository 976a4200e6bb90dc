-- VALUE.SET. KEYS: 1 value (hash: v, ver). ARGV: 1 value, 2 IFVERSION or ''.
local V = KEYS[1]
local ver = redis.call('HGET', V, 'ver') or '0'
if ARGV[2] ~= '' and ARGV[2] ~= ver then
  return { 'conflict', ver }
end
redis.call('HSET', V, 'v', ARGV[1])
return { 'ok', fmt(redis.call('HINCRBY', V, 'ver', 1)) }
