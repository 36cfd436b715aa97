-- Mark the budget closed: reservations are refused from now on; calls in flight still settle.
redis.call('HSET', state, 'closed', '1')
touch()
return {'ok'}
