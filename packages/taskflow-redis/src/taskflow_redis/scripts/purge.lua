--@ uses: delete
-- Delete finished tasks. ARGV: base, cutoff (microseconds), batch, run-key cutoff ('' = keep).
local n = purge_finished(ARGV[2], tonumber(ARGV[3]))
if ARGV[4] ~= '' then prune_runkeys(ARGV[4], tonumber(ARGV[3])) end
return n
