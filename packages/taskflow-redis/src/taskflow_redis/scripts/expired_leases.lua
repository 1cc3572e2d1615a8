-- Leases whose expiry has passed, oldest first. ARGV: base, now, limit.
-- Returns {id1, owner1, expiry1, ...}.
local rows = redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', ARGV[2], 'WITHSCORES',
  'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for i = 1, #rows, 2 do
  local owner = redis.call('HGET', K_LEASE_OWNERS, rows[i])
  if owner then
    out[#out + 1] = rows[i]
    out[#out + 1] = owner
    out[#out + 1] = rows[i + 1]
  end
end
return out
