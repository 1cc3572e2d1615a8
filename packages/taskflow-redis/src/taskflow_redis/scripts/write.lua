--@ uses: create_batch transition_batch
-- The record writes: new records (create, create_many), then status and field changes
-- (transition, transition_many, update), in one atomic script call. The creates are
-- applied (and their index changes flushed) first, so a change may name a task created
-- by the same call.
-- ARGV: base, retention cutoff ('' = none), auto-purge batch per finished task, the
-- records as one JSON array ('' = none; see create_batch), the changes as one JSON array
-- ('' = none; see transition_batch). One argument per side: cheap to send, one
-- cjson.decode here.
-- Returns two strings: a line per record, then a line per change ('' for an empty side).
local created, changed = '', ''
if ARGV[4] ~= '' then created = create_batch(cjson.decode(ARGV[4])) end
if ARGV[5] ~= '' then changed = transition_batch(cjson.decode(ARGV[5]), ARGV[2], tonumber(ARGV[3])) end
return {created, changed}
