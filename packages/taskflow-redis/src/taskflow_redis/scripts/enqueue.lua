--@ uses: queues
-- Put a task on a queue (replacing an earlier entry). ARGV: base, queue, id, priority,
-- due (17-digit microseconds), now (17-digit microseconds).
enqueue_one(ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
return 1
