-- Shared by every idem script (prepended by the Rust side).
--
-- Time comes from the Redis server (TIME), never from the client. Redis 7
-- replicates scripts by their effects, so calling TIME before writing is allowed.
-- Numbers that can exceed 2^53 (counter values) are handled as decimal
-- strings; fences and times stay below 2^53 (microseconds until year 2255).

-- A running idempotency record is kept this long after its lease runs out,
-- so that a takeover still knows the attempt number and the fingerprint
-- (idem_core::limits::RUNNING_RETAIN_MS, written in by the Rust side).
local RUN_RETAIN_MS = @RUNNING_RETAIN_MS@
-- The three below are written in by the Rust side (FENCE_GRACE,
-- WAITER_STALE and QUEUE_GRACE in idem-redis).
-- A fence counter outlives the record it serves by this much, so that a
-- deleted and re-created key continues from it rather than from the clock.
local FENCE_GRACE_MS = @FENCE_GRACE_MS@
-- A parked waiter that has not polled for this long is taken for gone.
local WAITER_STALE_MS = @WAITER_STALE_MS@
-- A waiter queue outlives its last waiter's deadline by this much.
local QUEUE_GRACE_MS = @QUEUE_GRACE_MS@

local function fmt(n)
  return string.format('%d', n)
end

local function clock()
  local t = redis.call('TIME')
  local s, us = tonumber(t[1]), tonumber(t[2])
  return s * 1000 + math.floor(us / 1000), s * 1000000 + us
end

-- Sets a key's expiry to at least ms milliseconds (never shortens it).
local function extend_ttl(key, ms)
  local t = redis.call('PTTL', key)
  if t >= 0 and t < ms then
    redis.call('PEXPIRE', key, ms)
  end
end

-- The next fence of a per-key counter: max(last + 1, now in microseconds).
-- Seeding from the clock keeps fences growing even after the counter key
-- expired together with its record.
local function next_fence(fkey, now_us, ttl_ms)
  local last = tonumber(redis.call('GET', fkey) or '0')
  local f = last + 1
  if now_us > f then
    f = now_us
  end
  redis.call('SET', fkey, fmt(f), 'PX', ttl_ms + FENCE_GRACE_MS)
  return f
end

-- Exact comparison of two canonical decimal integers (as Redis prints them).
local function cmp_int(a, b)
  local an, bn = string.sub(a, 1, 1) == '-', string.sub(b, 1, 1) == '-'
  if an ~= bn then
    if an then return -1 else return 1 end
  end
  local c = 0
  if #a ~= #b then
    if #a < #b then c = -1 else c = 1 end
  elseif a < b then
    c = -1
  elseif a > b then
    c = 1
  end
  if an then c = -c end
  return c
end

-- Waiter queues (WAIT of IDEM.BEGIN and LOCK). Q is a sorted set of waiter
-- ids by arrival ticket (FIFO); W is a hash of per-waiter fields:
--   d:<id> deadline (ms), s:<id> last poll (ms), a:<id> lease (ms),
--   p:<id> fingerprint or owner, h:<id> '1' when p is set,
--   g:<id> the grant "fence" or "fence:attempt" once the waiter was served,
--   seq    the ticket counter.
-- Waiters poll; a grant is made by whichever script frees the key (ABORT,
-- UNLOCK, DEL) or notices that its lease ran out, and is picked up by the
-- waiter's next poll.

local function wq_alive(W, id, now)
  local v = redis.call('HMGET', W, 'd:' .. id, 's:' .. id)
  local d, s = tonumber(v[1] or '0'), tonumber(v[2] or '0')
  return d > now and s + WAITER_STALE_MS > now
end

local function wq_forget(Q, W, id)
  redis.call('ZREM', Q, id)
  redis.call('HDEL', W, 'd:' .. id, 's:' .. id, 'a:' .. id, 'p:' .. id, 'h:' .. id)
end

-- The first live waiter, dropping dead ones at the head.
local function wq_head(Q, W, now)
  while true do
    local h = redis.call('ZRANGE', Q, 0, 0)
    if #h == 0 then
      return nil
    end
    if wq_alive(W, h[1], now) then
      return h[1]
    end
    wq_forget(Q, W, h[1])
  end
end

-- Enqueues (or refreshes) a waiter; false when the queue is full.
local function wq_register(Q, W, id, now, left_ms, lease, p, has_p, max)
  if not redis.call('ZSCORE', Q, id) then
    if redis.call('ZCARD', Q) >= max then
      return false
    end
    local seq = redis.call('HINCRBY', W, 'seq', 1)
    redis.call('ZADD', Q, seq, id)
    redis.call('HSET', W, 'a:' .. id, fmt(lease), 'p:' .. id, p, 'h:' .. id, has_p)
  end
  redis.call('HSET', W, 'd:' .. id, fmt(now + left_ms), 's:' .. id, fmt(now))
  for _, k in ipairs({ Q, W }) do
    if redis.call('PTTL', k) < left_ms + QUEUE_GRACE_MS then
      redis.call('PEXPIRE', k, left_ms + QUEUE_GRACE_MS)
    end
  end
  return true
end

-- Takes a waiter's grant, if it was served.
local function wq_take_grant(W, id)
  local g = redis.call('HGET', W, 'g:' .. id)
  if g then
    redis.call('HDEL', W, 'g:' .. id)
  end
  return g
end

-- Drops every dead waiter; returns how many remain.
local function wq_prune(Q, W, now)
  for _, id in ipairs(redis.call('ZRANGE', Q, 0, -1)) do
    if not wq_alive(W, id, now) then
      wq_forget(Q, W, id)
    end
  end
  return redis.call('ZCARD', Q)
end

local function err(code, msg)
  return { '!', code, msg }
end

