-- Compare-and-set a task's status and apply field changes in one step.
-- ARGV: base, id, expected (',a,b,' or '*' for any), new status ('' = keep), fin
-- ('' = unchanged, '-' = cleared, else microseconds), retention cutoff ('' = none),
-- auto-purge batch, field/value pairs.
-- Returns {1, json} on success, {0} when absent or not in expected, {-1} when corrupt.
local id, expected, new, fin, cutoff = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local key = task_key(id)
local cur = redis.pcall('HGET', key, 's')
if type(cur) == 'table' and cur.err then return {-1} end
if not cur then
  if redis.call('EXISTS', key) == 1 then return {-1} end
  return {0}
end
if expected ~= '*' and not string.find(expected, ',' .. cur .. ',', 1, true) then return {0} end
if new == '' then new = cur end
if #ARGV > 8 then redis.call('HSET', key, unpack(ARGV, 8)) end
if fin == '-' then
  redis.call('HDEL', key, 'fin')
elseif fin ~= '' then
  redis.call('HSET', key, 'fin', fin)
end
if new ~= cur then
  local v = redis.call('HMGET', key, 'm', 'f', 'k')
  local m, f, k = v[1], v[2], v[3]
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
track_finished(id, new, fin_now, cur)
if (DONE[new] or DONE[cur]) and (new ~= cur or fin ~= '') then
  local v = redis.call('HMGET', key, 'f', 'st')
  track_duration(id, new, v[1], v[2], fin_now)
end
local res = record_json(id)
if cutoff ~= '' and TERMINAL[new] and new ~= cur then
  purge_finished(cutoff, tonumber(ARGV[7]))
  prune_runkeys(cutoff, tonumber(ARGV[7]))
end
return {1, res}
