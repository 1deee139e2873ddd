-- write_tiles.lua — store recomputed heatmap tiles and finish the run, in one step — if no one else wrote.
--
-- The tiles string holds one 56-byte record per tile slot (models.heatmap.TILE_RECORD_FORMAT: the seven
-- tile counters as little-endian int64; slot = rank of the tile among the epoch's tiles that hold
-- contracts). The caller (fabric/tiles.py) read the tiles version, then the contracts' counter records, and
-- summed the tiles it took. Here, only if the tiles version is still the one it read (no other run wrote
-- tiles in between — e.g. a run that took over after this one's lock expired, whose newer sums must not be
-- overwritten with older ones), the records are written (one SETRANGE per run of adjacent slots), the
-- version is bumped (a worker trusts its cached copy of the tiles only while the version is the one it
-- wrote) and the processing set is deleted — it holds exactly what this run took (take_dirty.lua never
-- adds to an existing one). Otherwise nothing is written and the error "CONFLICT …" is answered: another
-- run wrote the tiles of the same processing set and deleted it; every contract that changed after that
-- run's read was marked dirty after its take, so it waits in the dirty set; the caller takes again. If the epoch was retired meanwhile (its
-- meta has a TTL), the tiles and the version get that TTL too, so no key outlives its epoch.
--
-- KEYS[1]  epoch:{U}:<E>:heatmap:tiles              STRING  tile records
-- KEYS[2]  epoch:{U}:<E>:heatmap:tiles_version      STRING
-- KEYS[3]  epoch:{U}:<E>:heatmap:dirty_processing   SET
-- KEYS[4]  massive:epoch:{U}:<E>:meta               HASH
-- ARGV[1]  the tiles version the caller read before reading the counters ("0" when there was none)
-- ARGV[2]  the records written, concatenated
-- ARGV[3…] per run of adjacent slots: byte offset in the tiles string, byte offset in ARGV[2] (from 0),
--          length in bytes  (none: nothing to write, the run only finishes)
-- Returns  the new tiles version, or the error "CONFLICT …" (nothing written; also when the epoch's meta
--          expired meanwhile: the caller's next take finds nothing)

local read = redis.call('GET', KEYS[2]) or '0'
if read ~= ARGV[1] then
  return redis.error_reply('CONFLICT tiles version is ' .. read .. ', the run read ' .. ARGV[1])
end
local ttl = redis.call('PTTL', KEYS[4])
if ttl == -2 then -- the epoch expired under the run: writing would create keys that never expire
  return redis.error_reply('CONFLICT the epoch is gone')
end
local records, sub, tonumber = ARGV[2], string.sub, tonumber
for i = 3, #ARGV, 3 do
  local from, length = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local part = (from == 0 and length == #records) and records or sub(records, from + 1, from + length)
  redis.call('SETRANGE', KEYS[1], tonumber(ARGV[i]), part)
end
local version = redis.call('INCR', KEYS[2])
redis.call('UNLINK', KEYS[3]) -- freed in the background: a fully dirty chain's set is 20,000 members
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return version
