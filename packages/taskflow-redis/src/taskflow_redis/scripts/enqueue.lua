--@ uses: queues
-- Put tasks on queues (replacing earlier entries), in order: the enqueue() calls of one
-- event-loop tick, coalesced. ARGV: base, then per item: queue, id, priority, due
-- (17-digit microseconds), now (17-digit microseconds). Returns the number of items.
local n = 0
for p = 2, #ARGV, 5 do
  enqueue_one(ARGV[p], ARGV[p + 1], ARGV[p + 2], ARGV[p + 3], ARGV[p + 4])
  n = n + 1
end
return n
