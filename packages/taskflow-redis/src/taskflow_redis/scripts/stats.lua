--@ uses: consts
-- The counters kept by every write. ARGV: base. Returns {status counts, func counts}.
return {redis.call('HGETALL', K_STAT_STATUS), redis.call('HGETALL', K_STAT_FUNC)}
