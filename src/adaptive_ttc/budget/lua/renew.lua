-- Extend the leases of reservations still open. ARGV[3] new expiry, ARGV[4..] ids.
-- Returns the ids that are no longer open (settled, or expired before this renewal).
reap()
local lost = {}
for i = 4, #ARGV do
  if redis.call('HEXISTS', open, ARGV[i]) == 1 then
    redis.call('ZADD', leases, 'XX', ARGV[3], ARGV[i])
  else
    table.insert(lost, ARGV[i])
  end
end
touch()
return lost
