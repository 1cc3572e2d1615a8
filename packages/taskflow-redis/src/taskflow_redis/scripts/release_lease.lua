-- Drop an owner's lease. ARGV: base, id, owner. Returns 1 if the owner held it.
local id = ARGV[2]
if redis.call('HGET', K_LEASE_OWNERS, id) ~= ARGV[3] then return 0 end
redis.call('HDEL', K_LEASE_OWNERS, id)
redis.call('ZREM', K_LEASES, id)
return 1
