-- accept_epoch.lua — record that a component is ready for an epoch, if the epoch is still live.
--
-- KEYS[1]  massive:epoch:{U}:<E>:meta    HASH
-- KEYS[2]  massive:epoch:{U}:<E>:ready   SET
-- ARGV[1]  component (ingest, heatmap, gex, …)
-- Returns  1 when recorded, 0 when the epoch is retired or gone (nothing is created for it)

local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'warming' and state ~= 'active' then
  return 0
end
redis.call('SADD', KEYS[2], ARGV[1])
return 1
