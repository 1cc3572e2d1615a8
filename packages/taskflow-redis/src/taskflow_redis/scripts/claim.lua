--@ uses: queues hand_over
-- Take up to limit due tasks off a queue and hand them to the claimer: an active task's
-- record gets the claimer as its owner in the same step.
-- ARGV: base, queue, owner, owner as JSON, now (17 digits), limit, promote cap.
-- Returns {id1, priority1, id2, priority2, ...}, best first.
local q, owner, owner_json, now = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local limit = tonumber(ARGV[6])
promote(q, now, tonumber(ARGV[7]))
local ready, _, items = queue_keys(q)
local taken = redis.call('ZRANGE', ready, 0, limit - 1)
local out = {}
for _, member in ipairs(taken) do
  local id = string.match(member, '^%d+|(.*)$')
  local v = redis.call('HGET', items, id)
  local prio = '0'
  if v then prio = string.match(v, '^(%-?%d+)|') end
  redis.call('ZREM', ready, member)
  redis.call('HDEL', items, id)
  hand_over(id, owner, owner_json)
  out[#out + 1] = id
  out[#out + 1] = prio
end
flush()
return out
