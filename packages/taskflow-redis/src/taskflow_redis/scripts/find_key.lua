--@ uses: record consts
-- The live holder of an idempotency key. ARGV: base, key. Returns {} or {id, json}.
local id = redis.call('HGET', K_IDEM, ARGV[2])
if not id then return {} end
local rec = record_json(id)
if not rec then return {} end
return {id, rec}
