--@ uses: consts keys
-- Nearest-rank run-time percentiles per function, read by rank from 'dur:s:<func>'.
-- ARGV: base, then function names ('*' alone: every function with durations).
-- Returns {func, count, p50, p95, p99, ...} with durations in microseconds.
local names
if ARGV[2] == '*' then
  names = redis.call('SMEMBERS', K_DUR_FUNCS)
else
  names = {}
  for i = 2, #ARGV do names[#names + 1] = ARGV[i] end
end
local out = {}
for _, f in ipairs(names) do
  local ds = dur_keys(f)
  local n = redis.call('ZCARD', ds)
  if n > 0 then
    out[#out + 1] = f
    out[#out + 1] = n
    for _, fraction in ipairs({0.5, 0.95, 0.99}) do
      local rank = math.min(math.max(1, math.ceil(fraction * n)), n) - 1
      local hit = redis.call('ZRANGE', ds, rank, rank, 'WITHSCORES')
      out[#out + 1] = hit[2]
    end
  end
end
return out
