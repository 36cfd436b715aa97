-- Create a budget or join an existing one (no prelude). ARGV[1] now, ARGV[2] ttl, ARGV[3] budget JSON ('' to
-- join only), ARGV[4] token cap ('' for none), ARGV[5] deadline seconds ('' for none), ARGV[6..] pool, cap pairs.
-- Returns {'exists' or 'created', budget JSON, start} or {'unknown'}.
local state, meta = KEYS[1], KEYS[6]
if redis.call('EXISTS', meta) == 1 then
  return {'exists', redis.call('HGET', meta, 'budget'), redis.call('HGET', meta, 'start')}
end
if ARGV[3] == '' then return {'unknown'} end
redis.call('HSET', meta, 'budget', ARGV[3], 'start', ARGV[1])
redis.call('HSET', state, 'spent', 0, 'reserved', 0, 'calls', 0, 'in_flight', 0, 'next_id', 0)
if ARGV[4] ~= '' then redis.call('HSET', state, 'cap', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', state, 'seconds', ARGV[5]) end
for i = 6, #ARGV, 2 do
  redis.call('HSET', state, 'cap:' .. ARGV[i], ARGV[i + 1], 'pu:' .. ARGV[i], 0, 'pc:' .. ARGV[i], 0)
end
for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], tonumber(ARGV[2])) end
return {'created', ARGV[3], ARGV[1]}
