-- IDEM.* on one key. KEYS: 1 record R (string), 2 the fence counter that
-- idem versions before the one-string record kept (read only to convert
-- such a record), 3 waiter queue Q, 4 waiter fields W. ARGV[1] is the
-- operation.
--
-- R is one string: a header '<st><fence>,<att>,<until>,<fplen>,', then the
-- fingerprint (fplen bytes; fplen empty: none), then the result (done only):
--   st 'r' running: until is the lease end. Kept (PX) until + RUN_RETAIN_MS
--          for a takeover's attempt number; from then on it reads as absent.
--   st 'd' done: until is the end of KEEP; kept max(KEEP, FENCE_GRACE_MS).
--   st 't' a tombstone left by ABORT and DEL: reads as absent; kept
--          FENCE_GRACE_MS.
-- Every deadline is compared with TIME here (gone when now >= deadline):
-- Redis's own expiry keeps a key through its deadline millisecond, so PX
-- only frees the memory, later.
--
-- The fence of the key's last grant stays in R as long as R exists, which
-- is at least FENCE_GRACE_MS after that grant, so the next fence is
-- max(last + 1, now in microseconds) with last read from R, and only the
-- clock once R is gone (as before, when the counter outlived its record by
-- the same grace). So a BEGIN on a key without R is one SET … NX GET PX
-- (Redis 7 and later): no waiter can be queued then, because waiters queue
-- only behind a running record and R outlives every waiter's deadline.
local R, F, Q, W = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op = ARGV[1]
local now, now_us = clock()
-- The fence of the key's last grant that R still knows (0: none).
local last = 0

-- A record an earlier idem wrote (a hash; its fence counter F): rewritten
-- in this format with the same expiry, then read as usual.
local function convert()
  local v = redis.call('HMGET', R, 'st', 'fp', 'fence', 'att', 'until', 'res')
  local ttl = redis.call('PTTL', R)
  local fence = tonumber(v[3] or '0')
  local counter = redis.pcall('GET', F)
  if type(counter) == 'string' and tonumber(counter) > fence then
    fence = tonumber(counter)
  end
  local s
  if v[1] == 'd' then
    s = enc('d', fence, 0, now + math.max(ttl, 0), v[2], v[6] or '')
  else
    s = enc('r', fence, tonumber(v[4] or '0'), tonumber(v[5] or '0'), v[2])
  end
  if ttl > 0 then
    redis.call('SET', R, s, 'PX', math.max(ttl, FENCE_GRACE_MS))
  else
    redis.call('SET', R, s)
  end
  return s
end

-- R's value, or false; converts an earlier idem's hash record.
local function read()
  local v = redis.pcall('GET', R)
  if type(v) == 'table' and v.err then
    return convert()
  end
  return v
end

-- The record live at now (a table), or nil; sets last.
local function view(v)
  if not v then
    return nil
  end
  local rec = dec(v, R)
  last = tonumber(rec.fence)
  if (rec.st == 'r' and now < rec.untl + RUN_RETAIN_MS) or (rec.st == 'd' and now < rec.untl) then
    return rec
  end
  return nil
end

local function load()
  return view(read())
end

local function result(rec)
  return string.sub(rec.raw, rec.at)
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
  local fence = last + 1
  if now_us > fence then
    fence = now_us
  end
  last = fence
  redis.call('SET', R, enc('r', fence, att, now + lease, rfp), 'PX', lease + RUN_RETAIN_MS)
  return fence, att
end

-- ABORT and DEL: the record goes, its fence stays for the next grant.
local function bury()
  redis.call('SET', R, enc('t', last, 0, 0, nil), 'PX', FENCE_GRACE_MS)
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

local function stale()
  return err('STALE', 'fence ' .. ARGV[2] .. ' does not hold this key')
end

-- The record if fence ARGV[2] holds it (running, lease live), else nil.
local function held()
  local rec = load()
  if rec == nil or rec.st ~= 'r' or rec.fence ~= ARGV[2] or rec.untl <= now then
    return nil
  end
  return rec
end

if op == 'begin' then
  -- ARGV: 2 has_fp, 3 fp, 4 lease_ms, 5 waiting, 6 waiter id, 7 mode
  -- (first | poll | leave), 8 wait left (ms), 9 most waiters, 10 '1' when
  -- SET takes NX and GET together (Redis 7 and later)
  local has_fp, fp, lease = ARGV[2] == '1', ARGV[3], tonumber(ARGV[4])
  local waiting, wid, mode = ARGV[5] == '1', ARGV[6], ARGV[7]
  local left_ms, wmax = tonumber(ARGV[8]), tonumber(ARGV[9])
  local rfp = nil
  if has_fp then
    rfp = fp
  end
  local rec
  if mode == 'first' then
    -- The fast path: without R the key is granted at once (fence: now in
    -- µs, attempt 1), else R's value comes back and nothing was written.
    local fresh = enc('r', now_us, 1, now + lease, rfp)
    local v
    if ARGV[10] == '1' then
      v = redis.pcall('SET', R, fresh, 'NX', 'GET', 'PX', lease + RUN_RETAIN_MS)
      if type(v) == 'table' and v.err then
        -- WRONGTYPE: an earlier idem's hash record; nothing was set.
        v = convert()
      end
    else
      v = read()
      if not v then
        redis.call('SET', R, fresh, 'PX', lease + RUN_RETAIN_MS)
      end
    end
    if not v then
      return { 'started', fmt(now_us), '1' }
    end
    rec = view(v)
  else
    local g = wq_take_grant(W, wid)
    if g then
      local sep = string.find(g, ':', 1, true)
      return { 'started', string.sub(g, 1, sep - 1), string.sub(g, sep + 1) }
    end
    rec = load()
  end
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
    return { 'done', result(rec) }
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
      redis.call('SET', R, enc('r', rec.fence, rec.att, now, rec.fp), 'PX', RUN_RETAIN_MS)
      rec.untl = now
      handover(rec)
    end
  end
  return { 'ok' }
elseif op == 'commit' then
  -- ARGV: 2 fence, 3 result, 4 keep_ms
  local rec = held()
  if rec == nil then
    return stale()
  end
  local keep = tonumber(ARGV[4])
  redis.call('SET', R, enc('d', rec.fence, rec.att, now + keep, rec.fp, ARGV[3]), 'PX', math.max(keep, FENCE_GRACE_MS))
  return { 'ok' }
elseif op == 'abort' then
  -- ARGV: 2 fence
  if held() == nil then
    return stale()
  end
  bury()
  handover(nil)
  return { 'ok' }
elseif op == 'renew' then
  -- ARGV: 2 fence, 3 lease_ms.
  local rec = held()
  if rec == nil then
    return stale()
  end
  local lease = tonumber(ARGV[3])
  redis.call('SET', R, enc('r', rec.fence, rec.att, now + lease, rec.fp), 'PX', lease + RUN_RETAIN_MS)
  return { 'renewed', rec.fence }
elseif op == 'get' then
  local rec = load()
  if is_free(rec) then
    return { 'absent' }
  end
  if rec.st == 'd' then
    return { 'done', result(rec) }
  end
  return { 'running', rec.fence, fmt(rec.untl - now) }
elseif op == 'inspect' then
  -- Read-only, for the inspector: { st ('' without a record), fence, att,
  -- ms left (lease while running, retention once done), result length,
  -- waiters queued (including ones whose caller vanished, until pruned) }.
  -- (A record of an earlier idem is converted first.)
  local rec = load()
  local queued = redis.call('ZCARD', Q)
  if rec == nil then
    return { '', '0', 0, 0, 0, queued }
  end
  local att = rec.att
  if rec.st == 'd' then
    att = 0
  end
  return { rec.st, rec.fence, att, rec.untl - now, #rec.raw - rec.at + 1, queued }
elseif op == 'del' then
  -- 1 whenever a record is removed, also a running one whose lease ran out
  -- and that is kept for its attempt number (as the core Machine and the
  -- SQL engines answer).
  local rec = load()
  local n = 0
  if rec ~= nil then
    n = 1
    bury()
  end
  handover(nil)
  return n
end
return err('ERR', 'unknown idem operation')
