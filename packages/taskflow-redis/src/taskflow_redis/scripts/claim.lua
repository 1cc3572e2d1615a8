--@ uses: queues hand_over
-- Take up to limit due tasks off a queue and hand them to the claimer: a PENDING task's
-- record gets the claimer as its owner in the same step (a RUNNING one stays its
-- runner's).
--
-- A reply can be lost after the script ran (the server stops before sending it): its
-- tasks would be owned by a live claimer and on no queue, so nobody would run them. So
-- each call carries a fresh token and logs what it hands over under 'claim:<token>'
-- (a JSON array of ready-set member, priority pairs, with an expiry), and the claimer's
-- next call passes the tokens of its calls that failed: their logged tasks that are
-- still PENDING, owned by the claimer and not queued again are handed over first (in
-- their logged order; beyond limit they go back on the queue, in their old place), and
-- each such log is replaced by an empty one, a fence: a failed call that reaches the
-- server late takes nothing. The next call also deletes the log of the previous call
-- whose reply arrived. A call whose own token is logged already was sent twice (by the
-- driver's retry): it answers what it logged, as a recovery would.
--
-- ARGV: base, queue, owner, owner as JSON, now (17 digits), limit, promote cap, token,
-- the token of the claimer's last call whose reply arrived ('' = none), log expiry
-- (seconds), then the tokens of the claimer's calls that failed.
-- Returns {recovered, id1, priority1, id2, priority2, ...}: the recovered tasks (their
-- number first) then the best of the queue.
local q, owner, owner_json, now = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local limit = tonumber(ARGV[6])
local token, received, ttl = ARGV[8], ARGV[9], ARGV[10]
local ready, _, items = queue_keys(q)
local function log_key(t) return B .. 'claim:' .. t end

local out, logged, seen = {}, {}, {}
local n = 0

-- Hand over (or, beyond limit, put back) a logged task that is still the claimer's.
local function recover(entries, put_back)
  for i = 1, #entries - 1, 2 do
    local member, prio = entries[i], entries[i + 1]
    local id = string.match(member, '^%d+|(.*)$')
    if id and not seen[id] then
      seen[id] = true
      local v = redis.pcall('HMGET', task_key(id), 's', 'o')
      if type(v) == 'table' and not v.err and v[1] == 'pending' and v[2] == owner
          and redis.call('HEXISTS', items, id) == 0 then
        if n < limit then
          out[#out + 1] = id
          out[#out + 1] = prio
          logged[#logged + 1] = member
          logged[#logged + 1] = prio
          n = n + 1
        elseif put_back then
          redis.call('HSET', items, id, prio .. '|' .. member)
          redis.call('ZADD', ready, -tonumber(prio), member)
        end
      end
    end
  end
end

local mine = redis.call('GET', log_key(token))
if mine then
  if mine ~= '' then recover(cjson.decode(mine), false) end
  return {n, unpack(out)}
end
if received ~= '' then redis.call('DEL', log_key(received)) end
for i = 11, #ARGV do
  local key = log_key(ARGV[i])
  local v = redis.call('GET', key)
  if v and v ~= '' then recover(cjson.decode(v), true) end
  redis.call('SET', key, '', 'EX', ttl)
end
local recovered = n

if n < limit then
  promote(q, now, tonumber(ARGV[7]))
  local taken = redis.call('ZRANGE', ready, 0, limit - n - 1)
  for _, member in ipairs(taken) do
    local id = string.match(member, '^%d+|(.*)$')
    local v = redis.call('HGET', items, id)
    local prio = '0'
    if v then prio = string.match(v, '^(%-?%d+)|') end
    redis.call('ZREM', ready, member)
    redis.call('HDEL', items, id)
    hand_over(id, owner, owner_json, true)
    out[#out + 1] = id
    out[#out + 1] = prio
    logged[#logged + 1] = member
    logged[#logged + 1] = prio
  end
  flush()
end
if #logged > 0 then redis.call('SET', log_key(token), cjson.encode(logged), 'EX', ttl) end
return {recovered, unpack(out)}
