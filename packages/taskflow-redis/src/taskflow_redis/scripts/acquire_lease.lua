-- Lease a task unless another owner's lease is live.
-- ARGV: base, id, owner, now (microseconds), expiry (microseconds). Returns 1 or 0.
local id, owner = ARGV[2], ARGV[3]
local holder = redis.call('HGET', K_LEASE_OWNERS, id)
if holder and holder ~= owner then
  local exp = redis.call('ZSCORE', K_LEASES, id)
  if exp and tonumber(exp) > tonumber(ARGV[4]) then return 0 end
end
redis.call('HSET', K_LEASE_OWNERS, id, owner)
redis.call('ZADD', K_LEASES, ARGV[5], id)
return 1
