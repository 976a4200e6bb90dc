-- CLAIM / CLAIM.ALL / RELEASE. KEYS: the claim keys (string: owner; PX when
-- the claim has a TTL). ARGV[1] is the operation, ARGV[2] the owner.
local op, owner = ARGV[1], ARGV[2]

if op == 'claim' then
  -- ARGV: 3 ttl_ms or ''
  local cur = redis.call('GET', KEYS[1])
  if cur and cur ~= owner then
    return { 'held', cur }
  end
  -- The latest CLAIM's TTL wins: none makes the claim last until released.
  if ARGV[3] ~= '' then
    redis.call('SET', KEYS[1], owner, 'PX', ARGV[3])
  else
    redis.call('SET', KEYS[1], owner)
  end
  return { 'claimed' }
elseif op == 'all' then
  -- ARGV: 3.. the idem keys, in KEYS order (for the reply)
  -- A key listed twice is reported once (docs/commands.md, as the core Machine).
  local held, seen = { 'held' }, {}
  for i, k in ipairs(KEYS) do
    local cur = redis.call('GET', k)
    if cur and cur ~= owner and not seen[k] then
      seen[k] = true
      held[#held + 1] = ARGV[i + 2]
      held[#held + 1] = cur
    end
  end
  if #held > 1 then
    return held
  end
  for _, k in ipairs(KEYS) do
    redis.call('SET', k, owner)
  end
  return { 'claimed' }
elseif op == 'release' then
  if redis.call('GET', KEYS[1]) == owner then
    redis.call('DEL', KEYS[1])
    return 1
  end
  return 0
end
return err('ERR', 'unknown claim operation')
