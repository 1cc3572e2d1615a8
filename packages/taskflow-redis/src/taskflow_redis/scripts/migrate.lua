--@ uses: deferred statuses
-- Bring a prefix written by taskflow-redis 0.1 (per-task leases) to the current layout,
-- once: index the owner of every PENDING/RUNNING task (its 'owner' field, else the holder
-- of its old lease) and drop the lease keys. ARGV: base. Returns the number of tasks
-- indexed, or -1 when the prefix is current already (the usual case: one GET).
local K_SCHEMA = B .. 'schema'
if redis.call('GET', K_SCHEMA) == '2' then return -1 end
local K_LEASE_OWNERS = B .. 'lease:owners'
local n = 0
for s in pairs(ACTIVE) do
  for _, m in ipairs(redis.call('ZRANGE', status_idx(s), 0, -1)) do
    local id = string.sub(m, 19)
    local v = redis.pcall('HMGET', task_key(id), 'o', 'owner')
    if type(v) == 'table' and not v.err and not v[1] then
      local o = false
      if v[2] and v[2] ~= 'null' then
        local ok, decoded = pcall(cjson.decode, v[2])
        if ok and type(decoded) == 'string' then o = decoded end
      end
      if not o then o = redis.call('HGET', K_LEASE_OWNERS, id) end
      if o then
        redis.call('HSET', task_key(id), 'o', o, 'owner', cjson.encode(o))
        reindex_owner(m, false, false, o, true)
        n = n + 1
      end
    end
  end
end
flush()
redis.call('DEL', B .. 'leases', K_LEASE_OWNERS)
redis.call('SET', K_SCHEMA, '2')
return n
