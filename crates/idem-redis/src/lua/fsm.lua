-- FSM.MOVE. KEYS: 1 state (string). ARGV: 1 target, 2.. FROM states
-- ('none', lower case, stands for an absent key).
local cur = redis.call('GET', KEYS[1])
local to = ARGV[1]
if cur == to then
  return { 'already', to }
end
local curw = cur or 'none'
for i = 2, #ARGV do
  if ARGV[i] == curw then
    redis.call('SET', KEYS[1], to)
    return { 'moved', to }
  end
end
return { 'refused', curw }
