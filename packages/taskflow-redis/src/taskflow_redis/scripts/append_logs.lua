--@ uses: keys
-- Append log entries to an existing task. ARGV: base, id, entries...
-- Returns the number appended, 0 for an unknown task, -1 when the log key is corrupt.
-- RPUSH takes the entries a thousand at a time: Lua's unpack() fails past ~8,000 values
-- ("too many results to unpack"), which lost every line of a task that logged more.
local id = ARGV[2]
if redis.call('EXISTS', task_key(id)) == 0 then return 0 end
local key, last = logs_key(id), #ARGV
for first = 3, last, 1000 do
  local r = redis.pcall('RPUSH', key, unpack(ARGV, first, math.min(first + 999, last)))
  if type(r) == 'table' and r.err then return -1 end
end
return last - 2
