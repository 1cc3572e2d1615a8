-- The live holder of an idempotency key. ARGV: base, key. Returns {} or {id, hash}.
local id = redis.call('HGET', K_IDEM, ARGV[2])
if not id then return {} end
local rec = load(id)
if not rec then return {} end
return {id, rec}
