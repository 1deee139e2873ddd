-- write_tiles.lua — store recomputed heatmap tiles and finish the run, in one step.
--
-- Writes the tiles, bumps the tiles version (a worker trusts its cached copy of the tiles only while the
-- version is the one it wrote) and deletes the processing set. If the epoch was retired meanwhile (its meta
-- has a TTL), the tiles and the version get that TTL too, so no key outlives its epoch.
--
-- KEYS[1]  epoch:{U}:<E>:heatmap:tiles              HASH
-- KEYS[2]  epoch:{U}:<E>:heatmap:tiles_version      STRING
-- KEYS[3]  epoch:{U}:<E>:heatmap:dirty_processing   SET
-- KEYS[4]  massive:epoch:{U}:<E>:meta               HASH
-- ARGV     tile, packed values, tile, packed values, …  (may be empty)
-- Returns  the new tiles version

if #ARGV > 0 then
  for i = 1, #ARGV, 4000 do
    redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 3999, #ARGV)))
  end
end
local version = redis.call('INCR', KEYS[2])
redis.call('DEL', KEYS[3])
local ttl = redis.call('PTTL', KEYS[4])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return version
