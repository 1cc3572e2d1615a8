--@ uses: keys
-- Append log entries to an existing task. ARGV: base, id, entries...
-- Returns the number appended, 0 for an unknown task, -1 when the log key is corrupt.
local id = ARGV[2]
if redis.call('EXISTS', task_key(id)) == 0 then return 0 end
local r = redis.pcall('RPUSH', logs_key(id), unpack(ARGV, 3))
if type(r) == 'table' and r.err then return -1 end
return #ARGV - 2
