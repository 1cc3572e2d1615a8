--@ uses: transition_batch
-- transition(..., take_key=True): one compare-and-set, as an item of transition_batch,
-- that also makes the task the holder of its idempotency key again ('idem' hash), in
-- the same atomic step, unless another task holds the key.
-- ARGV: base, retention cutoff ('' = none), auto-purge batch per finished task, the one
-- change as a JSON array (the item format of transition_batch).
-- Returns {'', line} with transition_batch's line ('' when absent or not in expected);
-- {'held', holder id, status} when another task holds the key (nothing written);
-- {'nokey'} when the task has no idempotency key (nothing written).
local items = cjson.decode(ARGV[4])
local id, expected = items[1], items[2]
local v = redis.pcall('HMGET', task_key(id), 's', 'k')
if type(v) == 'table' and not v.err then
  local s, k = v[1], v[2]
  if s and string.find(expected, ',' .. s .. ',', 1, true) then
    if not k then return {'nokey'} end
    local holder = redis.call('HGET', K_IDEM, k)
    if holder and holder ~= id then return {'held', holder, s} end
    -- Set first: an auto-purge in transition_batch that removed this very task would
    -- then remove the mapping with it.
    redis.call('HSET', K_IDEM, k, id)
    return {'', transition_batch(items, ARGV[2], tonumber(ARGV[3]))}
  end
end
return {'', transition_batch(items, ARGV[2], tonumber(ARGV[3]))}
