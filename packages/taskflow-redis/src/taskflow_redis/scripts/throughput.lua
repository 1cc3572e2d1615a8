--@ uses: consts
-- SUCCESS/FAILED tasks per finish-time bucket, from 'done:success' and 'done:failed'.
-- ARGV: base, mode. Mode 'count': then pairs of bounds (lo, '(' .. hi) per bucket; returns
-- {succeeded, failed} per bucket. Mode 'scan': then since, '(' .. until, first bucket
-- start, width (microseconds); returns {bucket index, succeeded, failed, ...} for the
-- buckets that have a task.
local out = {}
if ARGV[2] == 'count' then
  for i = 3, #ARGV - 1, 2 do
    out[#out + 1] = redis.call('ZCOUNT', DONE.success, ARGV[i], ARGV[i + 1])
    out[#out + 1] = redis.call('ZCOUNT', DONE.failed, ARGV[i], ARGV[i + 1])
  end
  return out
end
local first, width = tonumber(ARGV[5]), tonumber(ARGV[6])
local counts, order = {}, {}
for column, key in ipairs({DONE.success, DONE.failed}) do
  local hits = redis.call('ZRANGEBYSCORE', key, ARGV[3], ARGV[4], 'WITHSCORES')
  for i = 2, #hits, 2 do
    local index = math.floor((tonumber(hits[i]) - first) / width)
    local c = counts[index]
    if not c then
      c = {0, 0}
      counts[index] = c
      order[#order + 1] = index
    end
    c[column] = c[column] + 1
  end
end
table.sort(order)
for _, index in ipairs(order) do
  out[#out + 1] = index
  out[#out + 1] = counts[index][1]
  out[#out + 1] = counts[index][2]
end
return out
