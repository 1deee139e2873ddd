-- write_tiles.lua — store recomputed heatmap tiles and finish the run, in one step — if no one else wrote.
--
-- The caller (fabric/tiles.py) read the tiles version, then the contracts' counters, and summed the tiles
-- it took. Here, only if the tiles version is still the one it read (no other run wrote tiles in between —
-- e.g. a run that took over after this one's lock expired, whose newer sums must not be overwritten with
-- older ones), the tiles are written, the version is bumped (a worker trusts its cached copy of the tiles
-- only while the version is the one it wrote) and the processing set is deleted. Otherwise nothing is
-- written and the error "CONFLICT …" is answered: the caller runs again (the processing set is still there
-- or was finished by the other run, so nothing is lost). If the epoch was retired meanwhile (its meta has a
-- TTL), the tiles and the version get that TTL too, so no key outlives its epoch.
--
-- KEYS[1]  epoch:{U}:<E>:heatmap:tiles              HASH
-- KEYS[2]  epoch:{U}:<E>:heatmap:tiles_version      STRING
-- KEYS[3]  epoch:{U}:<E>:heatmap:dirty_processing   SET
-- KEYS[4]  massive:epoch:{U}:<E>:meta               HASH
-- ARGV[1]  the tiles version the caller read before reading the counters ("0" when there was none)
-- ARGV[2…] tile, packed values, tile, packed values, …  (may be none)
-- Returns  the new tiles version, or the error "CONFLICT …" (nothing written)

local read = redis.call('GET', KEYS[2]) or '0'
if read ~= ARGV[1] then
  return redis.error_reply('CONFLICT tiles version is ' .. read .. ', the run read ' .. ARGV[1])
end
for i = 2, #ARGV, 4000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 3999, #ARGV)))
end
local version = redis.call('INCR', KEYS[2])
redis.call('DEL', KEYS[3])
local ttl = redis.call('PTTL', KEYS[4])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return version
