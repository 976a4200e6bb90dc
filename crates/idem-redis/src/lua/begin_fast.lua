-- IDEM.BEGIN without WAIT on Redis 7 and later, the fast path: what it
-- answers, the idem script would answer too (see idem.lua), with only TIME
-- and one SET. KEYS: 1 record R. ARGV: 1 lease_ms, then 2 the fingerprint
-- only when the request has one (a fingerprint may be empty, so its
-- presence is the argument's, not its length).
-- A key without a record is granted (fence: now in µs, attempt 1); a live
-- record is answered (running, done, MISMATCH) from the value the same SET
-- returned, which then wrote nothing. Anything else (a tombstone, a lease
-- that ran out, an earlier idem's hash record) answers 'slow' with nothing
-- written, and the caller runs the idem script.
--
-- The record's layout is idem.lua's, written and read here without
-- record.lua's functions: every request runs this script, and defining
-- them (one closure each), filling a table per record and formatting every
-- number cost Redis's one thread more than the two commands do. The
-- conformance suite crosses both ways (records of one script read by the
-- other).
local RUN_RETAIN_MS = @RUNNING_RETAIN_MS@
local R = KEYS[1]
local lease, fp = tonumber(ARGV[1]), ARGV[2]
local has_fp = fp ~= nil
local t = redis.call('TIME')
local s, us = t[1], t[2]
-- Now in ms; Lua turns the digit strings into numbers for the arithmetic.
local now = s * 1000 + (us - us % 1000) / 1000
-- Now in µs, the fresh fence, from TIME's digits (us has at most six):
-- the digits of s * 1000000 + us without formatting a number.
local fence = s .. string.sub('00000' .. us, -6)
local head = 'r' .. fence .. ',1,' .. string.format('%d', now + lease) .. ','
local rec
if has_fp then
  rec = head .. #fp .. ',' .. fp
else
  rec = head .. ','
end
local v = redis.pcall('SET', R, rec, 'NX', 'GET', 'PX', lease + RUN_RETAIN_MS)
if not v then
  return { 'started', fence, '1' }
end
if type(v) == 'table' then
  return { 'slow' }
end
local st, rfence, untl, fpl, pos = string.match(v, '^([rdt])(%d+),%d+,(%d+),(%d*),()')
if not st then
  error('idem: unreadable record at ' .. R)
end
untl = tonumber(untl)
if st == 't' or now >= untl then
  return { 'slow' }
end
local at = pos
if fpl ~= '' then
  at = pos + tonumber(fpl)
  if has_fp and string.sub(v, pos, at - 1) ~= fp then
    return { '!', 'MISMATCH', 'this idempotency key was first used with a different fingerprint' }
  end
end
if st == 'd' then
  return { 'done', string.sub(v, at) }
end
return { 'running', rfence, string.format('%d', untl - now) }
