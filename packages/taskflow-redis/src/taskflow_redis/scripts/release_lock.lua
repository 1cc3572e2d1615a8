--@ uses: consts
-- Release a named lock. ARGV: base, name, owner. Returns 1 if the owner held it.
local v = redis.call('HGET', K_LOCKS, ARGV[2])
if not v or string.match(v, '^%d+|(.*)$') ~= ARGV[3] then return 0 end
redis.call('HDEL', K_LOCKS, ARGV[2])
return 1
