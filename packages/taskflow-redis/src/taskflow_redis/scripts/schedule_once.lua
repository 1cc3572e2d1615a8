--@ uses: queues consts
-- Enqueue a task unless its run key was used before.
-- ARGV: base, run key, queue, id, priority, run_at (17 digits), now (17 digits).
if redis.call('ZSCORE', K_RUNKEYS, ARGV[2]) then return 0 end
local used = math.max(tonumber(ARGV[6]), tonumber(ARGV[7]))
redis.call('ZADD', K_RUNKEYS, used, ARGV[2])
enqueue_one(ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
return 1
