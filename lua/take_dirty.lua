-- take_dirty.lua — atomically take the dirty contracts of one heatmap epoch for a recompute.
--
-- If an unfinished run left a processing set (it was killed, or is still running after its lock expired),
-- that set is taken as it is — the dirty set stays where it is for the next take. Otherwise the dirty set
-- becomes the processing set (RENAME: O(1), and a retired epoch's TTL moves with it). The processing set is
-- deleted by write_tiles.lua in the same step as the recomputed tiles.
--
-- Never merging the two is what keeps overlapping runs exact: a run deletes the processing set it wrote,
-- and that set holds only contracts the run itself took (a merge would let a run delete contracts another
-- run took after it, and whose tiles it never recomputed). The tiles version is read in this same atomic
-- step: write_tiles.lua writes only if it is unchanged, which proves the processing set is still the one
-- taken here (only write_tiles deletes it, and it bumps the version in the same step).
--
-- KEYS[1]  epoch:{U}:<E>:heatmap:dirty_contracts    SET
-- KEYS[2]  epoch:{U}:<E>:heatmap:dirty_processing   SET
-- KEYS[3]  epoch:{U}:<E>:heatmap:tiles_version      STRING
-- Returns  {1 if an unfinished run's set was taken else 0, the tiles version ("0" if none),
--           the contract ids to recompute}

local version = redis.call('GET', KEYS[3]) or '0'
if redis.call('EXISTS', KEYS[2]) == 1 then
  return { 1, version, redis.call('SMEMBERS', KEYS[2]) }
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('RENAME', KEYS[1], KEYS[2])
end
return { 0, version, redis.call('SMEMBERS', KEYS[2]) }
