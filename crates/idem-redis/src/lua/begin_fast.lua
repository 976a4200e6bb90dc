-- IDEM.BEGIN without WAIT on Redis 7 and later, the fast path: what it
-- answers, the idem script would answer too (see idem.lua), with only TIME
-- and one SET. KEYS: 1 record R. ARGV: 1 has_fp, 2 fp, 3 lease_ms.
-- A key without a record is granted (fence: now in µs, attempt 1); a live
-- record is answered (running, done, MISMATCH) from the value the same SET
-- returned, which then wrote nothing. Anything else (a tombstone, a lease
-- that ran out, an earlier idem's hash record) answers 'slow' with nothing
-- written, and the caller runs the idem script.
local RUN_RETAIN_MS = @RUNNING_RETAIN_MS@
local R = KEYS[1]
local has_fp, fp, lease = ARGV[1] == '1', ARGV[2], tonumber(ARGV[3])
local t = redis.call('TIME')
local s, us = tonumber(t[1]), tonumber(t[2])
local now, now_us = s * 1000 + math.floor(us / 1000), s * 1000000 + us
local rfp = nil
if has_fp then
  rfp = fp
end
local v = redis.pcall('SET', R, enc('r', now_us, 1, now + lease, rfp), 'NX', 'GET', 'PX', lease + RUN_RETAIN_MS)
if type(v) == 'table' then
  return { 'slow' }
end
if not v then
  return { 'started', fmt_int(now_us), '1' }
end
local rec = dec(v, R)
if not ((rec.st == 'r' or rec.st == 'd') and now < rec.untl) then
  return { 'slow' }
end
if rec.fp and has_fp and rec.fp ~= fp then
  return { '!', 'MISMATCH', 'this idempotency key was first used with a different fingerprint' }
end
if rec.st == 'd' then
  return { 'done', string.sub(v, rec.at) }
end
return { 'running', rec.fence, fmt_int(rec.untl - now) }
