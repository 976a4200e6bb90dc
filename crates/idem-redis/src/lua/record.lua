-- The idempotency record's string (the layout is described in idem.lua),
-- for the idem script (begin_fast.lua writes and reads it inline).
local function fmt_int(n)
  return string.format('%d', n)
end

local function enc(st, fence, att, untl, fp, res)
  local fpl = ''
  if fp then
    fpl = fmt_int(#fp)
  else
    fp = ''
  end
  if type(fence) == 'number' then
    fence = fmt_int(fence)
  end
  return st .. fence .. ',' .. fmt_int(att) .. ',' .. fmt_int(untl) .. ',' .. fpl .. ',' .. fp .. (res or '')
end

local function dec(v, R)
  local st, fence, att, untl, fpl, pos = string.match(v, '^([rdt])(%d+),(%d+),(%d+),(%d*),()')
  if not st then
    error('idem: unreadable record at ' .. R)
  end
  local fp, at = nil, pos
  if fpl ~= '' then
    at = pos + tonumber(fpl)
    fp = string.sub(v, pos, at - 1)
  end
  return { st = st, fence = fence, att = tonumber(att), untl = tonumber(untl), fp = fp, raw = v, at = at }
end

