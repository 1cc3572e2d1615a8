-- Extend the leases an owner still holds. ARGV: base, owner, expiry, ids...
-- Returns the ids renewed.
local owner, expires = ARGV[2], ARGV[3]
local out = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  if redis.call('HGET', K_LEASE_OWNERS, id) == owner then
    redis.call('ZADD', K_LEASES, expires, id)
    out[#out + 1] = id
  end
end
return out
