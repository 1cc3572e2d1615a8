--@ uses: record count track statuses
-- Insert-if-absent for a batch of records.
-- ARGV: base, then the batch as one JSON array, flat, per record: id, idem ('' = none),
-- status, func, member, ix (JSON array of its other index keys, after '<base>idx:'), fin
-- ('' = not finished), nfields, field/value pairs.
-- Returns one string, a line per record: '+' created, '~' created over a corrupt value,
-- else the JSON of the existing record (same id, or the live holder of the key).
local items = cjson.decode(ARGV[2])
local p = 1
local out = {}
local IX = {} -- decoded 'ix' lists (records of one function and queue share one)
while p <= #items do
  local id, idem, s, f, m, ix, fin = items[p], items[p + 1], items[p + 2], items[p + 3],
    items[p + 4], items[p + 5], items[p + 6]
  local nf = tonumber(items[p + 7])
  local first = p + 8
  p = first + 2 * nf
  local key = task_key(id)
  -- A new id (the usual case) costs one EXISTS; only a taken one is read.
  local existing = false
  if redis.call('EXISTS', key) == 1 then existing = record_json(id) end
  local result = nil
  if existing and existing ~= 'corrupt' then
    result = existing
  elseif idem ~= '' then
    local holder = redis.call('HGET', K_IDEM, idem)
    if holder and holder ~= id then
      local rec = record_json(holder)
      if rec and rec ~= 'corrupt' then result = rec end
    end
  end
  if not result then
    local code = '+'
    if existing == 'corrupt' then
      redis.call('DEL', key)
      code = '~'
    end
    redis.call('HSET', key, unpack(items, first, p - 1))
    local o, st = false, false
    for i = first, p - 1, 2 do
      if items[i] == 'o' then o = items[i + 1] elseif items[i] == 'st' then st = items[i + 1] end
    end
    zadd_later(K_ALL, 0, m)
    zadd_later(status_idx(s), 0, m)
    local ixs = IX[ix]
    if not ixs then
      ixs = {}
      for _, ik in ipairs(cjson.decode(ix)) do ixs[#ixs + 1] = B .. 'idx:' .. ik end
      IX[ix] = ixs
    end
    for _, ik in ipairs(ixs) do zadd_later(ik, 0, m) end
    count(s, f, 1)
    if ACTIVE[s] then reindex_owner(m, false, false, o, true) end
    if fin ~= '' then
      track_finished(id, s, fin)
      track_duration(id, s, f, st, fin)
    end
    if idem ~= '' and not RELEASING[s] then redis.call('HSET', K_IDEM, idem, id) end
    result = code
  end
  out[#out + 1] = result
end
flush()
return table.concat(out, '\n')
