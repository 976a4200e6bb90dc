-- LOCK / RENEW / UNLOCK / LOCK.INFO on one name. KEYS: 1 lock L (hash:
-- owner, fence, until; PX = lease so Redis reclaims it), 2 fence counter LF,
-- 3 waiter queue Q, 4 waiter fields W. ARGV[1] is the operation.
local L, LF, Q, W = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op = ARGV[1]
local now, now_us = clock()

local function load()
  local v = redis.call('HMGET', L, 'owner', 'fence', 'until')
  if not v[1] or tonumber(v[3]) <= now then
    return nil
  end
  return { owner = v[1], fence = v[2], untl = tonumber(v[3]) }
end

local function grant(owner, lease)
  local f = next_fence(LF, now_us, lease)
  redis.call('DEL', L)
  redis.call('HSET', L, 'owner', owner, 'fence', fmt(f), 'until', fmt(now + lease))
  redis.call('PEXPIRE', L, lease)
  return f
end

local function extend(rec, lease)
  redis.call('HSET', L, 'until', fmt(now + lease))
  redis.call('PEXPIRE', L, lease)
  extend_ttl(LF, lease + FENCE_GRACE_MS)
end

local function handover()
  local id = wq_head(Q, W, now)
  if not id then
    return
  end
  local v = redis.call('HMGET', W, 'a:' .. id, 'p:' .. id)
  local f = grant(v[2], tonumber(v[1]))
  wq_forget(Q, W, id)
  redis.call('HSET', W, 'g:' .. id, fmt(f))
end

if op == 'lock' then
  -- ARGV: 2 owner, 3 lease_ms, 4 waiting, 5 waiter id, 6 mode, 7 wait left, 8 most waiters
  local owner, lease = ARGV[2], tonumber(ARGV[3])
  local waiting, wid, mode = ARGV[4] == '1', ARGV[5], ARGV[6]
  local left_ms, wmax = tonumber(ARGV[7]), tonumber(ARGV[8])
  if waiting and mode ~= 'first' then
    local g = wq_take_grant(W, wid)
    if g then
      return { 'acquired', g }
    end
  end
  local rec = load()
  if rec == nil then
    local head = wq_head(Q, W, now)
    if head == nil or head == wid then
      if head then
        wq_forget(Q, W, wid)
      end
      return { 'acquired', fmt(grant(owner, lease)) }
    end
    -- Earlier waiters come first.
    handover()
    rec = load()
  end
  if rec.owner == owner then
    -- A re-LOCK by the holder extends the lease and keeps the fence.
    if waiting then
      wq_forget(Q, W, wid)
    end
    extend(rec, lease)
    return { 'acquired', rec.fence }
  end
  local left = fmt(rec.untl - now)
  if not waiting or mode == 'leave' then
    if waiting then
      wq_forget(Q, W, wid)
    end
    return { 'busy', rec.owner, left }
  end
  if not wq_register(Q, W, wid, now, left_ms, lease, owner, '1', wmax) then
    return err('BUSY', 'too many parked waiters on this lock')
  end
  return { 'wait', rec.owner, left }
elseif op == 'cancel' then
  -- ARGV: 2 waiter id. A parked caller went away: dequeue it, and if it
  -- had been handed the lock meanwhile, release it to the next waiter.
  local wid = ARGV[2]
  wq_forget(Q, W, wid)
  local g = wq_take_grant(W, wid)
  if g then
    local rec = load()
    if rec and rec.fence == g then
      redis.call('DEL', L)
      handover()
    end
  end
  return { 'ok' }
elseif op == 'renew' then
  -- ARGV: 2 owner, 3 lease_ms
  local rec = load()
  if rec == nil or rec.owner ~= ARGV[2] then
    return { 'lost' }
  end
  extend(rec, tonumber(ARGV[3]))
  return { 'renewed', rec.fence }
elseif op == 'unlock' then
  -- ARGV: 2 owner
  local rec = load()
  if rec == nil or rec.owner ~= ARGV[2] then
    return 0
  end
  redis.call('DEL', L)
  handover()
  return 1
elseif op == 'info' then
  local rec = load()
  if rec == nil then
    return { 'free' }
  end
  return { 'held', rec.owner, rec.fence, fmt(rec.untl - now), fmt(wq_prune(Q, W, now)) }
end
return err('ERR', 'unknown lock operation')
