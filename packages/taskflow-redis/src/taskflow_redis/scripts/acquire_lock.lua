--@ uses: consts
-- Take or extend a named lock. ARGV: base, name, owner, now, expiry (microseconds).
local v = redis.call('HGET', K_LOCKS, ARGV[2])
if v then
  local exp, holder = string.match(v, '^(%d+)|(.*)$')
  if holder ~= ARGV[3] and tonumber(exp) > tonumber(ARGV[4]) then return 0 end
end
redis.call('HSET', K_LOCKS, ARGV[2], ARGV[5] .. '|' .. ARGV[3])
return 1
