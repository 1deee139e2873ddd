-- set_spot.lua — store the underlying's price unless a newer one is already stored.
--
-- Newer wins, by event time. A stored time beyond ARGV[4] (the latest plausible event time, given by the
-- caller: its clock plus the lead it allows) cannot be a real event's: it is taken as no price at all, so one
-- absurd time written before it was bounded cannot hold the price for good.
--
-- KEYS[1]  massive:spot:{U}   HASH price, ts_ms, source
-- ARGV[1]  price
-- ARGV[2]  event time, Unix ms
-- ARGV[3]  source ("chain", "stocks", "indices", …)
-- ARGV[4]  optional: the latest plausible event time, Unix ms (absent or "": no bound)
-- Returns  1 when written, 0 when the stored price is as new or newer

local stored = tonumber(redis.call('HGET', KEYS[1], 'ts_ms') or '-1') or -1
local latest = tonumber(ARGV[4] or '')
if latest ~= nil and stored > latest then
  stored = -1
end
if tonumber(ARGV[2]) <= stored then
  return 0
end
redis.call('HSET', KEYS[1], 'price', ARGV[1], 'ts_ms', ARGV[2], 'source', ARGV[3])
return 1
