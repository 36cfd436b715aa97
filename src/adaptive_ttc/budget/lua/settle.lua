-- Charge or release one reservation. ARGV[3] id, ARGV[4] 'charge' or 'release', ARGV[5..11] the usage and record
-- (see record(); weighted '0' and an empty record on a release that spent nothing).
-- Returns {'ok'}, {'late'} (its lease had expired: what it spent is recorded now, once), or {'settled', how}.
reap()
local id, kind = ARGV[3], ARGV[4]
local spent = tonumber(ARGV[5]) > 0 or kind == 'charge'
local value = redis.call('HGET', open, id)
if value then
  local tokens, node = parse_open(value)
  unreserve(tokens, node)
  redis.call('HDEL', open, id)
  redis.call('ZREM', leases, id)
  if spent then record(node, 5, tokens) else redis.call('HINCRBY', state, 'pc:' .. pool_of(node), -1) end
  redis.call('HSET', done, id, kind == 'charge' and 'charged' or 'released')
  touch()
  return {'ok'}
end
local how = redis.call('HGET', done, id)
if how ~= 'expired' then return {'settled', how or ''} end
-- The lease expired (nothing was charged then): count what the call did spend now, beyond any reservation.
if spent then
  local node = ARGV[12]
  record(node, 5, 0)
  redis.call('HINCRBY', state, 'pc:' .. pool_of(node), 1)
end
redis.call('HSET', done, id, 'late-' .. kind)
touch()
return {'late'}
