-- Shared by every script (prepended). The keys of one budget share a hash tag, so they live on one slot.
-- KEYS: 1 state (hash of counters), 2 open (hash id -> "tokens:node"), 3 leases (zset id -> expiry),
--       4 records (list of call-record JSON), 5 done (hash id -> how it was settled), 6 meta (budget JSON, start)
-- ARGV[1]: now (the callers' shared clock, seconds), ARGV[2]: key time-to-live (seconds); the rest per script.
local state, open, leases, records, done, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local now, ttl = ARGV[1], tonumber(ARGV[2])

local function num(field)
  return tonumber(redis.call('HGET', state, field) or '0')
end

local function pool_of(node)
  if node ~= '' and redis.call('HEXISTS', state, 'cap:' .. node) == 1 then return node end
  return ''
end

local function parse_open(value)
  local tokens, node = string.match(value, '^(%d+):(.*)$')
  return tonumber(tokens), node
end

-- Free an open reservation's tokens (the caller removes it from `open`).
local function unreserve(tokens, node)
  local pool = pool_of(node)
  redis.call('HINCRBY', state, 'reserved', 0 - tokens)  -- not -tokens: Lua writes -0, which HINCRBY refuses
  redis.call('HINCRBY', state, 'pu:' .. pool, 0 - tokens)
  redis.call('HINCRBY', state, 'in_flight', -1)
end

-- Lazy expiry: every script first releases the reservations whose lease has run out, charging nothing.
local function reap()
  local ids = redis.call('ZRANGEBYSCORE', leases, '-inf', now)
  for _, id in ipairs(ids) do
    local value = redis.call('HGET', open, id)
    if value then
      local tokens, node = parse_open(value)
      unreserve(tokens, node)
      redis.call('HINCRBY', state, 'pc:' .. pool_of(node), -1)
      redis.call('HDEL', open, id)
      redis.call('HSET', done, id, 'expired')
      redis.call('HINCRBY', state, 'expired', 1)
    end
    redis.call('ZREM', leases, id)
  end
end

-- Record a call's real usage: ARGV[w0..w0+6] = weighted, input, output, latency_s, end_s, record JSON, reserved.
local function record(node, w0, reserved)
  local weighted = tonumber(ARGV[w0])
  local pool = pool_of(node)
  redis.call('HINCRBY', state, 'spent', weighted)
  redis.call('HINCRBY', state, 'input', tonumber(ARGV[w0 + 1]))
  redis.call('HINCRBY', state, 'output', tonumber(ARGV[w0 + 2]))
  redis.call('HINCRBY', state, 'overrun', math.max(0, weighted - reserved))
  redis.call('HINCRBY', state, 'pu:' .. pool, weighted)
  redis.call('HINCRBY', state, 'bn:' .. node, weighted)
  redis.call('HINCRBYFLOAT', state, 'latency_sum', ARGV[w0 + 3])
  local last = redis.call('HGET', state, 'last_end')
  if last == false or tonumber(ARGV[w0 + 4]) > tonumber(last) then
    redis.call('HSET', state, 'last_end', ARGV[w0 + 4])
  end
  redis.call('HINCRBY', state, 'calls', 1)
  redis.call('RPUSH', records, ARGV[w0 + 5])
end

local function touch()
  for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ttl) end
end

if redis.call('EXISTS', meta) == 0 then return {'unknown'} end
