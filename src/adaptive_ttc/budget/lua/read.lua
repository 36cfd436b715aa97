-- The counters after expiring lapsed leases. ARGV[3] '1' to return the call records too.
-- Returns {flat state hash, start, records (or empty)}.
reap()
local rows = {}
if ARGV[3] == '1' then rows = redis.call('LRANGE', records, 0, -1) end
return {redis.call('HGETALL', state), redis.call('HGET', meta, 'start'), rows}
