-- convert_tiles.lua — replace an epoch's tiles written as text by an earlier version of mmaker.
--
-- If the tiles key holds a HASH (text tiles), it is deleted, every contract of the epoch is marked dirty
-- (so the next run writes all tiles as records) and the tiles version is bumped (no worker may trust a copy
-- of the old tiles). The dirty set and the version get the epoch's remaining TTL if it was retired, so no
-- key outlives its epoch. Anything else: nothing changes.
--
-- KEYS[1]  epoch:{U}:<E>:heatmap:tiles              HASH (text) or STRING (records)
-- KEYS[2]  epoch:{U}:<E>:heatmap:dirty_contracts    SET
-- KEYS[3]  massive:epoch:{U}:<E>:universe           SET
-- KEYS[4]  epoch:{U}:<E>:heatmap:tiles_version      STRING
-- KEYS[5]  massive:epoch:{U}:<E>:meta               HASH
-- Returns  1 if converted, else 0

if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('SUNIONSTORE', KEYS[2], KEYS[2], KEYS[3])
redis.call('INCR', KEYS[4])
local ttl = redis.call('PTTL', KEYS[5])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[4], ttl)
end
return 1
