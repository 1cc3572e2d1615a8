--@ uses: record count track delete statuses
-- Compare-and-set the status of a batch of tasks, applying field changes in the same step
-- (transition, transition_many and update; one script call whatever the batch size).
-- ARGV: base, retention cutoff ('' = none), auto-purge batch per finished task, then the
-- batch as one JSON array (one argument: cheap to send, one cjson.decode here), flat, per
-- item: id, expected (',a,b,' or '*' for any), new status ('' = keep), fin ('' = unchanged,
-- '-' = cleared, else microseconds), owner ('' = unchanged, '-' = cleared, '=' .. owner),
-- nfields, field/value pairs.
-- Returns one string, a line per item: the record's JSON on success, '' when absent or
-- not in expected, '!' when the key holds a value that is not a record.
-- Each task hash is read once (HMGET) and written once (HSET, plus HDEL when a field is
-- cleared); index and counter changes are deferred to the one flush of the batch.
local cutoff, per_finish = ARGV[2], tonumber(ARGV[3])
local items = cjson.decode(ARGV[4])

-- HMGET layout: 'd', 's', MUTABLE (3..11), then these.
local M, F, K, O, FIN, ST = 12, 13, 14, 15, 16, 17
local READ = {'d', 's'}
for _, name in ipairs(MUTABLE) do READ[#READ + 1] = name end
for _, name in ipairs({'m', 'f', 'k', 'o', 'fin', 'st'}) do READ[#READ + 1] = name end

local function apply(id, expected, new, fin, own, first, last)
  local key = task_key(id)
  local v = redis.pcall('HMGET', key, unpack(READ))
  if type(v) == 'table' and v.err then return '!', false end
  local cur = v[2]
  if not cur then
    if redis.call('EXISTS', key) == 1 then return '!', false end
    return '', false
  end
  if expected ~= '*' and not string.find(expected, ',' .. cur .. ',', 1, true) then
    return '', false
  end
  if new == '' then new = cur end
  local w = {}
  for i = first, last, 2 do
    local name, value = items[i], items[i + 1]
    w[#w + 1] = name
    w[#w + 1] = value
    local at = MUTABLE_AT[name]
    if at then
      v[at] = value
    elseif name == 'st' then
      v[ST] = value
    end
  end
  local dels = {}
  if fin == '-' then
    if v[FIN] then dels[#dels + 1] = 'fin' end
    v[FIN] = false
  elseif fin ~= '' then
    w[#w + 1] = 'fin'
    w[#w + 1] = fin
    v[FIN] = fin
  end
  local o = v[O]
  local new_o = o
  if own == '-' then
    new_o = false
    if o then dels[#dels + 1] = 'o' end
  elseif own ~= '' then
    new_o = string.sub(own, 2)
    w[#w + 1] = 'o'
    w[#w + 1] = new_o
  end
  if new ~= cur then
    w[#w + 1] = 's'
    w[#w + 1] = new
    v[2] = new
  end
  if #w > 0 then redis.call('HSET', key, unpack(w)) end
  if #dels > 0 then redis.call('HDEL', key, unpack(dels)) end
  local m, f, k = v[M], v[F], v[K]
  reindex_owner(m, o, ACTIVE[cur], new_o, ACTIVE[new])
  if new ~= cur then
    if m then
      zrem_later(status_idx(cur), m)
      zadd_later(status_idx(new), 0, m)
    end
    count(cur, f, -1)
    count(new, f, 1)
    if k and RELEASING[new] and redis.call('HGET', K_IDEM, k) == id then
      redis.call('HDEL', K_IDEM, k)
    end
  end
  local fin_now = v[FIN]
  if fin_now or TERMINAL[cur] then track_finished(id, new, fin_now, cur) end
  if (DONE[new] or DONE[cur]) and (new ~= cur or fin ~= '') then
    track_duration(id, new, f, v[ST], fin_now)
  end
  local json = splice(v, true)
  if json == 'corrupt' then json = '!' end
  return json, TERMINAL[new] and new ~= cur
end

local out = {}
local finished = 0
local p = 1
while p <= #items do
  local nf = tonumber(items[p + 5])
  local first = p + 6
  local last = first + 2 * nf - 1
  local res, done = apply(items[p], items[p + 1], items[p + 2], items[p + 3], items[p + 4],
    first, last)
  if done then finished = finished + 1 end
  out[#out + 1] = res
  p = last + 1
end
flush()
if cutoff ~= '' and finished > 0 then
  purge_finished(cutoff, per_finish * finished)
  prune_runkeys(cutoff, per_finish * finished)
end
return table.concat(out, '\n')
