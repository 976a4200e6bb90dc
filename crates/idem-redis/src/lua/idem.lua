-- IDEM.* on one key. KEYS: 1 record R (hash), 2 fence counter F, 3 waiter
-- queue Q, 4 waiter fields W. ARGV[1] is the operation.
--
-- R fields: st ('r' running | 'd' done), fp (first BEGIN's fingerprint, if
-- any), fence, att (attempt), until (lease end, ms), res (result when done).
local R, F, Q, W = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op = ARGV[1]
local now, now_us = clock()

local function load()
  local v = redis.call('HMGET', R, 'st', 'fp', 'fence', 'att', 'until')
  if not v[1] then
    return nil
  end
  return { st = v[1], fp = v[2], fence = v[3], att = tonumber(v[4] or '0'), untl = tonumber(v[5] or '0') }
end

local function fp_conflict(rec, has, fp)
  return rec ~= nil and rec.fp and has and rec.fp ~= fp
end

local function is_free(rec)
  return rec == nil or (rec.st == 'r' and rec.untl <= now)
end

-- Starts an attempt on a free key: rec is nil (absent) or a running record
-- whose lease ran out (a takeover: attempt + 1, fingerprint kept).
local function grant(rec, lease, has, fp)
  local att, rfp = 1, nil
  if rec then
    att, rfp = rec.att + 1, rec.fp
  elseif has then
    rfp = fp
  end
  local fence = next_fence(F, now_us, lease + RUN_RETAIN_MS)
  -- A takeover replaces the old record whole; an absent one has nothing to drop.
  if rec then
    redis.call('DEL', R)
  end
  local fields = { 'st', 'r', 'fence', fmt(fence), 'att', fmt(att), 'until', fmt(now + lease) }
  if rfp then
    fields[#fields + 1] = 'fp'
    fields[#fields + 1] = rfp
  end
  redis.call('HSET', R, unpack(fields))
  redis.call('PEXPIRE', R, lease + RUN_RETAIN_MS)
  return fence, att
end

-- Hands a free key to the first live waiter whose fingerprint fits; waiters
-- whose fingerprint does not fit are dropped (their next poll gets MISMATCH).
local function handover(rec)
  while true do
    local id = wq_head(Q, W, now)
    if not id then
      return
    end
    local v = redis.call('HMGET', W, 'a:' .. id, 'p:' .. id, 'h:' .. id)
    local whas = v[3] == '1'
    if fp_conflict(rec, whas, v[2]) then
      wq_forget(Q, W, id)
    else
      local f, a = grant(rec, tonumber(v[1]), whas, v[2])
      wq_forget(Q, W, id)
      redis.call('HSET', W, 'g:' .. id, fmt(f) .. ':' .. fmt(a))
      return
    end
  end
end

if op == 'begin' then
  -- ARGV: 2 has_fp, 3 fp, 4 lease_ms, 5 waiting, 6 waiter id, 7 mode
  -- (first | poll | leave), 8 wait left (ms), 9 most waiters
  local has_fp, fp, lease = ARGV[2] == '1', ARGV[3], tonumber(ARGV[4])
  local waiting, wid, mode = ARGV[5] == '1', ARGV[6], ARGV[7]
  local left_ms, wmax = tonumber(ARGV[8]), tonumber(ARGV[9])
  if waiting and mode ~= 'first' then
    local g = wq_take_grant(W, wid)
    if g then
      local sep = string.find(g, ':', 1, true)
      return { 'started', string.sub(g, 1, sep - 1), string.sub(g, sep + 1) }
    end
  end
  local rec = load()
  for _ = 1, 2 do
    if fp_conflict(rec, has_fp, fp) then
      if waiting then
        wq_forget(Q, W, wid)
      end
      return err('MISMATCH', 'this idempotency key was first used with a different fingerprint')
    end
    if not is_free(rec) then
      break
    end
    local head = wq_head(Q, W, now)
    if head == nil or head == wid then
      if head then
        wq_forget(Q, W, wid)
      end
      local f, a = grant(rec, lease, has_fp, fp)
      return { 'started', fmt(f), fmt(a) }
    end
    -- Earlier waiters come first: serve the head, then look again.
    handover(rec)
    rec = load()
  end
  if is_free(rec) then
    -- Only reachable if the handover dropped every waiter: start ourselves.
    local f, a = grant(rec, lease, has_fp, fp)
    return { 'started', fmt(f), fmt(a) }
  end
  if rec.st == 'd' then
    if waiting then
      wq_forget(Q, W, wid)
    end
    return { 'done', redis.call('HGET', R, 'res') }
  end
  local left = fmt(rec.untl - now)
  if not waiting or mode == 'leave' then
    if waiting then
      wq_forget(Q, W, wid)
    end
    return { 'running', rec.fence, left }
  end
  if not wq_register(Q, W, wid, now, left_ms, lease, fp, ARGV[2], wmax) then
    return err('BUSY', 'too many parked waiters on this key')
  end
  return { 'wait', rec.fence, left }
elseif op == 'cancel' then
  -- ARGV: 2 waiter id. A parked caller went away: dequeue it, and if it
  -- had been handed the key meanwhile, end that lease now and serve the
  -- next waiter (as if the lease had run out).
  local wid = ARGV[2]
  wq_forget(Q, W, wid)
  local g = wq_take_grant(W, wid)
  if g then
    local fence = string.sub(g, 1, string.find(g, ':', 1, true) - 1)
    local rec = load()
    if rec and rec.st == 'r' and rec.fence == fence and rec.untl > now then
      redis.call('HSET', R, 'until', fmt(now))
      rec.untl = now
      handover(rec)
    end
  end
  return { 'ok' }
elseif op == 'commit' then
  -- ARGV: 2 fence, 3 result, 4 keep_ms
  local rec = load()
  if rec == nil or rec.st ~= 'r' or rec.fence ~= ARGV[2] or rec.untl <= now then
    return err('STALE', 'fence ' .. ARGV[2] .. ' does not hold this key')
  end
  local keep = tonumber(ARGV[4])
  redis.call('HSET', R, 'st', 'd', 'res', ARGV[3])
  redis.call('HDEL', R, 'fence', 'att', 'until')
  redis.call('PEXPIRE', R, keep)
  extend_ttl(F, keep + FENCE_GRACE_MS)
  return { 'ok' }
elseif op == 'abort' then
  -- ARGV: 2 fence
  local rec = load()
  if rec == nil or rec.st ~= 'r' or rec.fence ~= ARGV[2] or rec.untl <= now then
    return err('STALE', 'fence ' .. ARGV[2] .. ' does not hold this key')
  end
  redis.call('DEL', R)
  handover(nil)
  return { 'ok' }
elseif op == 'renew' then
  -- ARGV: 2 fence, 3 lease_ms. The record and its fence counter live as
  -- long as a grant of this lease would make them.
  local rec = load()
  if rec == nil or rec.st ~= 'r' or rec.fence ~= ARGV[2] or rec.untl <= now then
    return err('STALE', 'fence ' .. ARGV[2] .. ' does not hold this key')
  end
  local lease = tonumber(ARGV[3])
  redis.call('HSET', R, 'until', fmt(now + lease))
  redis.call('PEXPIRE', R, lease + RUN_RETAIN_MS)
  extend_ttl(F, lease + RUN_RETAIN_MS + FENCE_GRACE_MS)
  return { 'renewed', rec.fence }
elseif op == 'get' then
  local rec = load()
  if is_free(rec) then
    return { 'absent' }
  end
  if rec.st == 'd' then
    return { 'done', redis.call('HGET', R, 'res') }
  end
  return { 'running', rec.fence, fmt(rec.untl - now) }
elseif op == 'inspect' then
  -- Read-only, for the inspector: { st ('' without a record), fence, att,
  -- ms left (lease while running, retention once done), result length,
  -- waiters queued (including ones whose caller vanished, until pruned) }.
  local rec = load()
  local queued = redis.call('ZCARD', Q)
  if rec == nil then
    return { '', '0', 0, 0, 0, queued }
  end
  local left = rec.untl - now
  if rec.st == 'd' then
    left = redis.call('PTTL', R)
  end
  return { rec.st, rec.fence or '0', rec.att, left, redis.call('HSTRLEN', R, 'res'), queued }
elseif op == 'del' then
  -- 1 whenever a record is removed, also a running one whose lease ran out
  -- and that is kept for its attempt number (as the core Machine and the
  -- SQL engines answer).
  local rec = load()
  local n = 0
  if rec ~= nil then
    n = 1
  end
  redis.call('DEL', R)
  handover(nil)
  return n
end
return err('ERR', 'unknown idem operation')
