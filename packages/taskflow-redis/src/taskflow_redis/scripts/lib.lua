-- Shared helpers. A script names the blocks it uses on its first line ('--@ uses: a b');
-- only those (and what they need, '--@ name: needs') are prepended to it, so a call does
-- not pay for defining helpers it never runs. 'base' is always included.
--
-- Every script gets ARGV[1] = the key base ('{prefix}:') and at least one key in KEYS
-- (so a cluster client can route it); every key it touches starts with the base, so all
-- of them hash to one cluster slot. Times are integer microseconds since the epoch and
-- always come from the caller's clock (ARGV), never from the server.

--@ base
local B = ARGV[1]
--@ statuses
local TERMINAL = {success = true, failed = true, interrupted = true, cancelled = true,
                  rejected = true}
local RELEASING = {failed = true, rejected = true}
local ACTIVE = {pending = true, running = true}

--@ consts
local K_IDEM = B .. 'idem'
local K_ALL = B .. 'idx:all'
local K_FINISHED = B .. 'idx:finished'
local K_STAT_STATUS = B .. 'stats:status'
local K_STAT_FUNC = B .. 'stats:func'
local K_OWNERS = B .. 'owners'
local K_LOCKS = B .. 'locks'
local K_RUNKEYS = B .. 'runkeys'
local K_SEQ = B .. 'seq'
local K_DUR_FUNCS = B .. 'dur:funcs'
local DONE = {success = B .. 'done:success', failed = B .. 'done:failed'}
local DUR_KEEP = 1000

--@ keys
local function task_key(id) return B .. 'task:' .. id end
local function logs_key(id) return B .. 'logs:' .. id end
local function status_idx(s) return B .. 'idx:status:' .. s end
local function owned_idx(o) return B .. 'own:' .. o end
local function dur_keys(f) return B .. 'dur:s:' .. f, B .. 'dur:t:' .. f end

--@ deferred: consts keys
-- Deferred writes. Index and counter changes are gathered while a script works through
-- its batch and written by flush() with one variadic command per key (a group commit of
-- 250 starts bumps each counter once, not 250 times). Every script that changes tasks
-- calls flush() before it returns, and before anything reads those keys again (purge).
-- The batches of one script touch each member at most once, so order within a key is
-- irrelevant.
local ZADDS, ZREMS, COUNTS, OWNERS_SEEN, DUR_SEEN = {}, {}, {}, {}, {}

local function later(pending, key, a, b)
  local t = pending[key]
  if not t then
    t = {}
    pending[key] = t
  end
  t[#t + 1] = a
  if b then t[#t + 1] = b end
end

local function zadd_later(key, score, member) later(ZADDS, key, score, member) end
local function zrem_later(key, member) later(ZREMS, key, member) end

local function bump(hash, field, delta)
  local h = COUNTS[hash]
  if not h then
    h = {}
    COUNTS[hash] = h
  end
  h[field] = (h[field] or 0) + delta
end

local function variadic(cmd, key, args)
  local step = 4000
  for i = 1, #args, step do redis.call(cmd, key, unpack(args, i, math.min(i + step - 1, #args))) end
end

-- Ownership index: 'own:<owner>' holds the index members of that owner's active tasks
-- (all scores 0, so lexicographic order is created_at then id), and 'owners' the owners
-- with a non-empty 'own:' set. A task is in it while its status is active and its raw
-- owner field 'o' is set. Every script that changes a status or an owner calls this.
local function reindex_owner(m, old_o, old_active, new_o, new_active)
  if not m then return end
  if not old_active then old_o = nil end
  if not new_active then new_o = nil end
  if old_o == new_o then return end
  if old_o then
    zrem_later(owned_idx(old_o), m)
    OWNERS_SEEN[old_o] = true
  end
  if new_o then
    zadd_later(owned_idx(new_o), 0, m)
    OWNERS_SEEN[new_o] = true
  end
end

local function flush()
  for key, members in pairs(ZREMS) do variadic('ZREM', key, members) end
  for key, pairs_ in pairs(ZADDS) do variadic('ZADD', key, pairs_) end
  for hash, fields in pairs(COUNTS) do
    for field, delta in pairs(fields) do
      if delta ~= 0 and redis.call('HINCRBY', hash, field, delta) <= 0 then
        redis.call('HDEL', hash, field)
      end
    end
  end
  for o in pairs(OWNERS_SEEN) do
    if redis.call('EXISTS', owned_idx(o)) == 1 then
      redis.call('SADD', K_OWNERS, o)
    else
      redis.call('SREM', K_OWNERS, o)
    end
  end
  for f in pairs(DUR_SEEN) do
    local ds, dt = dur_keys(f)
    local n = redis.call('ZCARD', dt)
    if n > 0 then redis.call('SADD', K_DUR_FUNCS, f) end
    if n > DUR_KEEP then
      local old = redis.call('ZRANGE', dt, 0, n - DUR_KEEP - 1)
      variadic('ZREM', dt, old)
      variadic('ZREM', ds, old)
    end
  end
  ZADDS, ZREMS, COUNTS, OWNERS_SEEN, DUR_SEEN = {}, {}, {}, {}, {}
end

--@ hand_over: deferred statuses
-- Give an active task a new owner (nil: none): raw 'o' (for the index) and the JSON
-- 'owner' field. Returns true when the task exists, holds a record and is active.
local function hand_over(id, new_o, new_json, pending_only)
  local key = task_key(id)
  local v = redis.pcall('HMGET', key, 's', 'm', 'o')
  if type(v) == 'table' and v.err then return false end
  local s, m, o = v[1], v[2], v[3]
  if not s or not ACTIVE[s] then return false end
  if pending_only and s ~= 'pending' then return false end
  if new_o then
    redis.call('HSET', key, 'o', new_o, 'owner', new_json)
  else
    redis.call('HDEL', key, 'o')
    redis.call('HSET', key, 'owner', 'null')
  end
  reindex_owner(m, o, true, new_o, true)
  return true
end

--@ record: keys
local MUTABLE = {'attempt', 'updated_at', 'started_at', 'finished_at', 'error', 'result',
                 'progress', 'cancel_requested', 'owner'}

-- The fields a record is spliced from: 'd', 's', then MUTABLE (positions 3 to 11).
local MUTABLE_AT = {}
for i, name in ipairs(MUTABLE) do MUTABLE_AT[name] = i + 2 end

-- The JSON text of a record from its HMGET'd fields v ('d', 's', MUTABLE...) without
-- parsing them; false when the task does not exist (exists: whether the key does),
-- 'corrupt' when the key holds a foreign value.
local function splice(v, exists)
  local d, s = v[1], v[2]
  if not d and not s then
    if exists then return 'corrupt' end
    return false
  end
  if not d or not s or string.sub(d, 1, 1) ~= '{' or string.sub(d, -1) ~= '}' then
    return 'corrupt'
  end
  local parts = {string.sub(d, 1, -2), ',"status":"', s, '"'}
  for i, name in ipairs(MUTABLE) do
    local raw = v[i + 2]
    if raw then parts[#parts + 1] = ',"' .. name .. '":' .. raw end
  end
  parts[#parts + 1] = '}'
  local json = table.concat(parts)
  -- Our JSON never holds a raw newline; batch replies are newline-framed (see frame()).
  if string.find(json, '\n', 1, true) then return 'corrupt' end
  return json
end

-- The JSON text of a task record (no logs); false when there is no such task, 'corrupt'
-- when the key holds a foreign value.
local function record_json(id)
  local key = task_key(id)
  local v = redis.pcall('HMGET', key, 'd', 's', unpack(MUTABLE))
  if type(v) == 'table' and v.err then return 'corrupt' end
  if not v[1] and not v[2] then return splice(v, redis.call('EXISTS', key) == 1) end
  return splice(v, true)
end

--@ count: deferred
local function count(s, f, delta)
  bump(K_STAT_STATUS, s, delta)
  bump(K_STAT_FUNC, s .. ':' .. (f or ''), delta)
end

--@ track: deferred statuses
-- Finished tasks by time ('idx:finished', for purge), and SUCCESS/FAILED ones per status
-- ('done:<status>', for throughput). prev: the status before (nil: unknown), so a
-- transition between other statuses touches no 'done' set.
local function track_finished(id, s, fin, prev)
  if TERMINAL[s] and fin then
    zadd_later(K_FINISHED, fin, id)
  else
    zrem_later(K_FINISHED, id)
  end
  for status, key in pairs(DONE) do
    if status == s and fin then
      zadd_later(key, fin, id)
    elseif prev == nil or status == prev then
      zrem_later(key, id)
    end
  end
end

-- Run times of each function's DUR_KEEP most recently finished SUCCESS/FAILED tasks:
-- 'dur:s:<func>' scored by duration (read by rank), 'dur:t:<func>' by finish time
-- (trimmed by flush()).
local function track_duration(id, s, f, st, fin)
  f = f or ''
  local ds, dt = dur_keys(f)
  if (s == 'success' or s == 'failed') and st and st ~= '' and fin and fin ~= '' then
    zadd_later(ds, tonumber(fin) - tonumber(st), id)
    zadd_later(dt, fin, id)
    DUR_SEEN[f] = true
  else
    zrem_later(ds, id)
    zrem_later(dt, id)
  end
end

--@ delete: count track statuses
-- Remove a task, its logs, its index entries, its counters, key and ownership entry.
local function delete_task(id)
  local key = task_key(id)
  local v = redis.pcall('HMGET', key, 's', 'm', 'ix', 'k', 'f', 'o')
  if not (type(v) == 'table' and v.err) and v[1] then
    local s, m, ix, k, f, o = v[1], v[2], v[3], v[4], v[5], v[6]
    reindex_owner(m, o, ACTIVE[s], nil, false)
    if m then
      zrem_later(K_ALL, m)
      zrem_later(status_idx(s), m)
      if ix then
        for _, ik in ipairs(cjson.decode(ix)) do zrem_later(B .. 'idx:' .. ik, m) end
      end
    end
    count(s, f, -1)
    if k and redis.call('HGET', K_IDEM, k) == id then redis.call('HDEL', K_IDEM, k) end
    track_duration(id, '', f)
  end
  redis.call('DEL', key, logs_key(id))
  zrem_later(K_FINISHED, id)
  for _, key in pairs(DONE) do zrem_later(key, id) end
end

-- Delete at most n finished tasks with finished_at < cutoff; return how many.
local function purge_finished(cutoff, n)
  local ids = redis.call('ZRANGEBYSCORE', K_FINISHED, '-inf', '(' .. cutoff, 'LIMIT', 0, n)
  for _, id in ipairs(ids) do delete_task(id) end
  flush()
  return #ids
end

-- Forget at most n one-off schedule run keys used before cutoff.
local function prune_runkeys(cutoff, n)
  local keys = redis.call('ZRANGEBYSCORE', K_RUNKEYS, '-inf', '(' .. cutoff, 'LIMIT', 0, n)
  if #keys > 0 then redis.call('ZREM', K_RUNKEYS, unpack(keys)) end
end

--@ queues: consts
-- Queues: 'ready' is ordered by (-priority, due, seq) through score and member;
-- 'delayed' holds not-yet-due ids by due time; 'items' maps id -> 'priority|member'.
local function queue_keys(q)
  local base = B .. 'queue:' .. q
  return base .. ':ready', base .. ':delayed', base .. ':items'
end

local function unqueue(q, id)
  local ready, delayed, items = queue_keys(q)
  local v = redis.call('HGET', items, id)
  if not v then return false end
  local member = string.match(v, '^%-?%d+|(.*)$')
  redis.call('ZREM', ready, member)
  redis.call('ZREM', delayed, id)
  redis.call('HDEL', items, id)
  return true
end

-- due and now are zero-padded 17-digit microsecond strings; prio an integer string.
local function enqueue_one(q, id, prio, due, now)
  unqueue(q, id)
  local ready, delayed, items = queue_keys(q)
  local seq = redis.call('INCR', K_SEQ)
  local member = due .. string.format('%015d', seq) .. '|' .. id
  redis.call('HSET', items, id, prio .. '|' .. member)
  if tonumber(due) <= tonumber(now) then
    redis.call('ZADD', ready, -tonumber(prio), member)
  else
    redis.call('ZADD', delayed, tonumber(due), id)
  end
end

-- Move up to cap due tasks from 'delayed' to 'ready'.
local function promote(q, now, cap)
  local ready, delayed, items = queue_keys(q)
  local ids = redis.call('ZRANGEBYSCORE', delayed, '-inf', tonumber(now), 'LIMIT', 0, cap)
  for _, id in ipairs(ids) do
    local v = redis.call('HGET', items, id)
    if v then
      local prio, member = string.match(v, '^(%-?%d+)|(.*)$')
      redis.call('ZADD', ready, -tonumber(prio), member)
    end
    redis.call('ZREM', delayed, id)
  end
end


--@ create_batch: record count track statuses
-- Insert-if-absent for a batch of records. items: the decoded JSON array, flat, per
-- record: id, idem ('' = none), status, func, member, ix (JSON array of its other index
-- keys, after '<base>idx:'), fin ('' = not finished), nfields, field/value pairs.
-- Returns one string, a line per record: '+' created, '~' created over a corrupt value,
-- else the JSON of the existing record (same id, or the live holder of the key).
local function create_batch(items)
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
end

--@ transition_batch: record count track delete statuses
-- Compare-and-set the status of a batch of tasks, applying field changes in the same step
-- (transition, transition_many and update). items: the decoded JSON array, flat, per
-- item: id, expected (',a,b,' or '*' for any), new status ('' = keep), fin ('' = unchanged,
-- '-' = cleared, else microseconds), owner ('' = unchanged, '-' = cleared, '=' .. owner),
-- quiet ('1': answer '+' instead of the record, '' = the record), nfields, field/value
-- pairs. cutoff: the retention cutoff ('' = none); per_finish: the auto-purge batch per
-- task that finishes.
-- Returns one string, a line per item: the record's JSON on success ('+' for a quiet
-- item), '' when absent or not in expected, '!' when the key holds a value that is not
-- a record.
-- Each task hash is read once (HMGET) and written once (HSET, plus HDEL when a field is
-- cleared); index and counter changes are deferred to the one flush of the batch.

-- HMGET layout: 'd', 's', MUTABLE (3..11), then these.
local T_M, T_F, T_K, T_O, T_FIN, T_ST = 12, 13, 14, 15, 16, 17
local T_READ = {'d', 's'}
for _, name in ipairs(MUTABLE) do T_READ[#T_READ + 1] = name end
for _, name in ipairs({'m', 'f', 'k', 'o', 'fin', 'st'}) do T_READ[#T_READ + 1] = name end

local function apply_transition(items, id, expected, new, fin, own, quiet, first, last)
  local key = task_key(id)
  local v = redis.pcall('HMGET', key, unpack(T_READ))
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
      v[T_ST] = value
    end
  end
  local dels = {}
  if fin == '-' then
    if v[T_FIN] then dels[#dels + 1] = 'fin' end
    v[T_FIN] = false
  elseif fin ~= '' then
    w[#w + 1] = 'fin'
    w[#w + 1] = fin
    v[T_FIN] = fin
  end
  local o = v[T_O]
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
  local m, f, k = v[T_M], v[T_F], v[T_K]
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
  local fin_now = v[T_FIN]
  if fin_now or TERMINAL[cur] then track_finished(id, new, fin_now, cur) end
  if (DONE[new] or DONE[cur]) and (new ~= cur or fin ~= '') then
    track_duration(id, new, f, v[T_ST], fin_now)
  end
  if quiet == '1' then return '+', TERMINAL[new] and new ~= cur end
  local json = splice(v, true)
  if json == 'corrupt' then json = '!' end
  return json, TERMINAL[new] and new ~= cur
end

local function transition_batch(items, cutoff, per_finish)
  local out = {}
  local finished = 0
  local p = 1
  while p <= #items do
    local nf = tonumber(items[p + 6])
    local first = p + 7
    local last = first + 2 * nf - 1
    local res, done = apply_transition(items, items[p], items[p + 1], items[p + 2],
      items[p + 3], items[p + 4], items[p + 5], first, last)
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
end
