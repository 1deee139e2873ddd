-- set_spot.lua — store the underlying's price unless a newer one is already stored.
--
-- KEYS[1]  massive:spot:{U}   HASH price, ts_ms, source
-- ARGV[1]  price
-- ARGV[2]  event time, Unix ms
-- ARGV[3]  source ("chain", "stocks", "indices", …)
-- Returns  1 when written, 0 when the stored price is as new or newer

local stored = tonumber(redis.call('HGET', KEYS[1], 'ts_ms') or '-1')
if tonumber(ARGV[2]) <= stored then
  return 0
end
redis.call('HSET', KEYS[1], 'price', ARGV[1], 'ts_ms', ARGV[2], 'source', ARGV[3])
return 1
