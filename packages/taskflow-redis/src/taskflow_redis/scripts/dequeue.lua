--@ uses: queues
-- Remove a waiting task from a queue. ARGV: base, queue, id. Returns 1 if it was there.
if unqueue(ARGV[2], ARGV[3]) then return 1 end
return 0
