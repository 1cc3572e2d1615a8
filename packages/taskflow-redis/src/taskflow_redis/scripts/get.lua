--@ uses: record
-- A task with its logs. ARGV: base, id.
-- Returns {json or '' (absent) or 'corrupt', logs or 'corrupt'}.
local rec = record_json(ARGV[2])
if not rec then return {'', {}} end
local logs = redis.pcall('LRANGE', logs_key(ARGV[2]), 0, -1)
if type(logs) == 'table' and logs.err then logs = 'corrupt' end
return {rec, logs}
