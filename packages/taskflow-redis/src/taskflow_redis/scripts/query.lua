--@ uses: record keys consts
-- One page of the task list, newest first, by walking lexicographic index sets whose
-- members are '<created microseconds, 17 digits>:<task id>'.
-- ARGV: base, want, upper bound, lower bound, budget, n status keys, status keys...,
-- n and-keys, and-keys...  A member must be in every and-key and in one status key.
-- The smallest candidate set drives the walk (the status sets merged newest first);
-- the others are checked per member with ZSCORE, so nothing scans the keyspace.
-- Returns {resume, member1, json1, member2, json2, ...} (json '' when the record vanished): resume is '' when the walk
-- ended normally, else the last member scanned when the budget ran out.
local want, upper, lower, budget = tonumber(ARGV[2]), ARGV[3], ARGV[4], tonumber(ARGV[5])
local p = 6
local skeys, akeys = {}, {}
local ns = tonumber(ARGV[p])
for i = 1, ns do skeys[i] = ARGV[p + i] end
p = p + ns + 1
local na = tonumber(ARGV[p])
for i = 1, na do akeys[i] = ARGV[p + i] end
local Q = ARGV[p + na + 1] or ''

-- Text search: Q (ASCII-lowered) in the id, the function, a tag key/value or the error.
local function text_ok(m)
  if Q == '' then return true end
  local id = string.sub(m, 19)
  if string.find(string.lower(id), Q, 1, true) then return true end
  local v = redis.pcall('HMGET', task_key(id), 'f', 'sx', 'error')
  if type(v) ~= 'table' or v.err then return false end
  if v[1] and string.find(string.lower(v[1]), Q, 1, true) then return true end
  if v[2] and string.find(v[2], Q, 1, true) then return true end
  if v[3] then
    local ok, e = pcall(cjson.decode, v[3])
    if ok and type(e) == 'string' and string.find(string.lower(e), Q, 1, true) then
      return true
    end
  end
  return false
end

local best, best_cost = nil, nil
for i, k in ipairs(akeys) do
  local c = redis.call('ZCARD', k)
  if not best_cost or c < best_cost then best, best_cost = i, c end
end
local streams, and_filters, or_filters = {K_ALL}, {}, {}
local scost = nil
if ns > 0 then
  scost = 0
  for _, k in ipairs(skeys) do scost = scost + redis.call('ZCARD', k) end
end
if scost and (not best_cost or scost <= best_cost) then
  streams, and_filters = skeys, akeys
elseif best then
  streams, or_filters = {akeys[best]}, skeys
  for i, k in ipairs(akeys) do
    if i ~= best then and_filters[#and_filters + 1] = k end
  end
end

local function gt(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
end

local chunk = math.min(math.max(want, 64), 1000)
local bufs, pos, bounds, done = {}, {}, {}, {}
for i = 1, #streams do bufs[i], pos[i], bounds[i], done[i] = {}, 1, upper, false end
local function head(i)
  if pos[i] > #bufs[i] then
    if done[i] then return nil end
    bufs[i] = redis.call('ZRANGE', streams[i], bounds[i], lower, 'BYLEX', 'REV', 'LIMIT', 0, chunk)
    pos[i] = 1
    if #bufs[i] < chunk then done[i] = true end
    if #bufs[i] == 0 then return nil end
    bounds[i] = '(' .. bufs[i][#bufs[i]]
  end
  return bufs[i][pos[i]]
end

local hits, scanned, resume = {}, 0, ''
while #hits < want do
  local bi, bm = nil, nil
  for i = 1, #streams do
    local m = head(i)
    if m and (not bm or gt(m, bm)) then bi, bm = i, m end
  end
  if not bi then break end
  pos[bi] = pos[bi] + 1
  scanned = scanned + 1
  local ok = true
  for _, k in ipairs(and_filters) do
    if not redis.call('ZSCORE', k, bm) then ok = false; break end
  end
  if ok and #or_filters > 0 then
    ok = false
    for _, k in ipairs(or_filters) do
      if redis.call('ZSCORE', k, bm) then ok = true; break end
    end
  end
  if ok then ok = text_ok(bm) end
  if ok then hits[#hits + 1] = bm end
  if scanned >= budget and #hits < want then resume = bm; break end
end

local out = {resume}
for _, m in ipairs(hits) do
  out[#out + 1] = m
  out[#out + 1] = record_json(string.sub(m, 19)) or ''
end
return out
