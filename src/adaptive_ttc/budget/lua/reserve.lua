-- ARGV[3] tokens, ARGV[4] node ('' for none), ARGV[5] lease expiry, ARGV[6] '1' to ignore the deadline.
-- Returns {'ok', id} or {'closed'} / {'deadline', left} / {'full', left}; left = unreserved tokens ('' if no cap).
if redis.call('HGET', state, 'closed') == '1' then return {'closed'} end
reap()
local tokens, node = tonumber(ARGV[3]), ARGV[4]
local pool = pool_of(node)
local left = ''
local cap = redis.call('HGET', state, 'cap')
if cap then
  local overall = tonumber(cap) - num('spent') - num('reserved')
  left = math.max(0, math.min(overall, num('cap:' .. pool) - num('pu:' .. pool)))
end
local seconds = redis.call('HGET', state, 'seconds')
if seconds and ARGV[6] ~= '1' and tonumber(now) - tonumber(redis.call('HGET', meta, 'start')) >= tonumber(seconds) then
  return {'deadline', tostring(left)}
end
if left ~= '' and tokens > left then return {'full', tostring(left)} end
local id = redis.call('HINCRBY', state, 'next_id', 1)
redis.call('HSET', open, id, tokens .. ':' .. node)
redis.call('ZADD', leases, ARGV[5], id)
redis.call('HINCRBY', state, 'reserved', tokens)
redis.call('HINCRBY', state, 'pu:' .. pool, tokens)
redis.call('HINCRBY', state, 'pc:' .. pool, 1)
redis.call('HINCRBY', state, 'in_flight', 1)
touch()
return {'ok', id}
