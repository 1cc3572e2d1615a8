-- Insert-if-absent for a batch of records.
-- ARGV: base, n, then per record: id, idem ('' = none), status, func, member, ix (JSON array
-- of its other index keys, after '<base>idx:'), fin ('' = not finished), nfields, field/value pairs.
-- Returns per record {code, json}: 1 created, 2 created over a corrupt value, 0 an existing
-- record (same id, or the live holder of the key) whose JSON is the second element.
local n = tonumber(ARGV[2])
local p = 3
local out = {}
for _ = 1, n do
  local id, idem, s, f, m, ix, fin = ARGV[p], ARGV[p + 1], ARGV[p + 2], ARGV[p + 3],
    ARGV[p + 4], ARGV[p + 5], ARGV[p + 6]
  local nf = tonumber(ARGV[p + 7])
  local first = p + 8
  p = first + 2 * nf
  local key = task_key(id)
  local existing = record_json(id)
  local result = nil
  if existing and existing ~= 'corrupt' then
    result = {0, existing}
  elseif idem ~= '' then
    local holder = redis.call('HGET', K_IDEM, idem)
    if holder and holder ~= id then
      local rec = record_json(holder)
      if rec and rec ~= 'corrupt' then result = {0, rec} end
    end
  end
  if not result then
    local code = 1
    if existing == 'corrupt' then
      redis.call('DEL', key)
      code = 2
    end
    redis.call('HSET', key, unpack(ARGV, first, p - 1))
    local o, st = false, false
    for i = first, p - 1, 2 do
      if ARGV[i] == 'o' then o = ARGV[i + 1] elseif ARGV[i] == 'st' then st = ARGV[i + 1] end
    end
    zadd_later(K_ALL, 0, m)
    zadd_later(status_idx(s), 0, m)
    for _, ik in ipairs(cjson.decode(ix)) do zadd_later(B .. 'idx:' .. ik, 0, m) end
    count(s, f, 1)
    if ACTIVE[s] then reindex_owner(m, false, false, o, true) end
    if fin ~= '' then
      track_finished(id, s, fin)
      track_duration(id, s, f, st, fin)
    end
    if idem ~= '' and not RELEASING[s] then redis.call('HSET', K_IDEM, idem, id) end
    result = {code}
  end
  out[#out + 1] = result
end
flush()
return out
