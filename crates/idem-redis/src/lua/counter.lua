-- COUNTER.ADD. KEYS: 1 counter (string, decimal i64), 2 op record (string:
-- the value the op produced; PX keep) — only used with OP.
-- ARGV: 1 delta, 2 min or '', 3 max or '', 4 has op, 5 keep_ms.
-- Values are exact decimal strings: INCRBY does the i64 arithmetic (and
-- refuses overflow), cmp_int the bounds; Lua numbers would round past 2^53.
local K, O = KEYS[1], KEYS[2]
local delta, min, max, has_op, keep = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == '1', ARGV[5]
if has_op then
  local v = redis.call('GET', O)
  if v then
    return { 'replayed', v }
  end
end
local old = redis.call('GET', K)
local cur = old or '0'
local ok = redis.pcall('INCRBY', K, delta)
if type(ok) == 'table' and ok.err then
  -- Overflow: INCRBY changed nothing.
  return { 'refused', cur }
end
local new = redis.call('GET', K)
if (min ~= '' and cmp_int(new, min) < 0) or (max ~= '' and cmp_int(new, max) > 0) then
  if old then
    redis.call('SET', K, old)
  else
    redis.call('DEL', K)
  end
  return { 'refused', cur }
end
if has_op then
  redis.call('SET', O, new, 'PX', keep)
end
return { 'ok', new }
