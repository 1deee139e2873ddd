-- take_dirty.lua — atomically take the dirty contracts of one heatmap epoch for a recompute.
--
-- The dirty set is moved into the processing set (merged with whatever an unfinished earlier run left
-- there), so a run killed at any point loses nothing: the next run takes those contracts again. The
-- processing set is deleted by write_tiles.lua in the same step as the recomputed tiles. A processing set
-- created from a retired epoch's dirty set inherits its TTL.
--
-- KEYS[1]  epoch:{U}:<E>:heatmap:dirty_contracts    SET
-- KEYS[2]  epoch:{U}:<E>:heatmap:dirty_processing   SET
-- Returns  the contract ids to recompute (every member of the processing set)

if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('RENAME', KEYS[1], KEYS[2])  -- the usual case: O(1), and the TTL (if any) moves with it
elseif redis.call('EXISTS', KEYS[1]) == 1 then
  local ttl = redis.call('PTTL', KEYS[1])
  redis.call('SUNIONSTORE', KEYS[2], KEYS[2], KEYS[1])
  redis.call('DEL', KEYS[1])
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[2], ttl)
  end
end
return redis.call('SMEMBERS', KEYS[2])
