--@ uses: hand_over record
-- Compare-and-set the owner of an active task (status and updated_at untouched).
-- ARGV: base, id, expected owner, new owner ('' with JSON 'null': release), new owner as JSON.
-- Returns {1, json} on success, {0} when absent, finished or owned by someone else,
-- {-1} when the key holds a value that is not a record.
local id, owner = ARGV[2], ARGV[3]
local v = redis.pcall('HMGET', task_key(id), 's', 'o')
if type(v) == 'table' and v.err then return {-1} end
if not v[1] or not ACTIVE[v[1]] or v[2] ~= owner then return {0} end
local new_o = ARGV[4]
if ARGV[5] == 'null' then new_o = nil end
hand_over(id, new_o, ARGV[5])
flush()
return {1, record_json(id)}
