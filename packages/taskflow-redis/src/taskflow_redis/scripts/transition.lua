-- Compare-and-set the status of a batch of tasks, applying field changes in the same step
-- (transition, transition_many and update; one script call whatever the batch size).
-- ARGV: base, retention cutoff ('' = none), auto-purge batch per finished task, n, then per
-- item: id, expected (',a,b,' or '*' for any), new status ('' = keep), fin ('' = unchanged,
-- '-' = cleared, else microseconds), owner ('' = unchanged, '-' = cleared, '=' .. owner),
-- nfields, field/value pairs.
-- Returns per item {1, json} on success, {0} when absent or not in expected, {-1} when
-- the key holds a value that is not a record.
local cutoff, per_finish, n = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])

local function apply(id, expected, new, fin, own, first, last)
  local key = task_key(id)
  local cur = redis.pcall('HGET', key, 's')
  if type(cur) == 'table' and cur.err then return {-1}, false end
  if not cur then
    if redis.call('EXISTS', key) == 1 then return {-1}, false end
    return {0}, false
  end
  if expected ~= '*' and not string.find(expected, ',' .. cur .. ',', 1, true) then
    return {0}, false
  end
  if new == '' then new = cur end
  if last >= first then redis.call('HSET', key, unpack(ARGV, first, last)) end
  if fin == '-' then
    redis.call('HDEL', key, 'fin')
  elseif fin ~= '' then
    redis.call('HSET', key, 'fin', fin)
  end
  local v = redis.call('HMGET', key, 'm', 'f', 'k', 'o')
  local m, f, k, o = v[1], v[2], v[3], v[4]
  local new_o = o
  if own == '-' then
    new_o = nil
    if o then redis.call('HDEL', key, 'o') end
  elseif own ~= '' then
    new_o = string.sub(own, 2)
    redis.call('HSET', key, 'o', new_o)
  end
  reindex_owner(m, o, ACTIVE[cur], new_o, ACTIVE[new])
  if new ~= cur then
    if m then
      redis.call('ZREM', status_idx(cur), m)
      redis.call('ZADD', status_idx(new), 0, m)
    end
    redis.call('HSET', key, 's', new)
    count(cur, f, -1)
    count(new, f, 1)
    if k and RELEASING[new] and redis.call('HGET', K_IDEM, k) == id then
      redis.call('HDEL', K_IDEM, k)
    end
  end
  local fin_now = redis.call('HGET', key, 'fin')
  if fin_now or TERMINAL[cur] then track_finished(id, new, fin_now, cur) end
  if (DONE[new] or DONE[cur]) and (new ~= cur or fin ~= '') then
    track_duration(id, new, f, redis.call('HGET', key, 'st'), fin_now)
  end
  return {1, record_json(id)}, TERMINAL[new] and new ~= cur
end

local out = {}
local finished = 0
local p = 5
for i = 1, n do
  local nf = tonumber(ARGV[p + 5])
  local first = p + 6
  local last = first + 2 * nf - 1
  local res, done = apply(ARGV[p], ARGV[p + 1], ARGV[p + 2], ARGV[p + 3], ARGV[p + 4], first, last)
  if done then finished = finished + 1 end
  out[i] = res
  p = last + 1
end
if cutoff ~= '' and finished > 0 then
  purge_finished(cutoff, per_finish * finished)
  prune_runkeys(cutoff, per_finish * finished)
end
return out
