-- recompute_tiles.lua — recompute heatmap tiles from their contracts' current state and finish the run.
--
-- The caller (fabric/tiles.py) took the dirty contracts (take_dirty.lua) and found, in the epoch's layout,
-- every tile holding one of them and every contract of those tiles. Here, in one atomic step, each tile is
-- summed from the live counters of all its contracts (never patched with a delta, so a repeated or killed
-- run can neither lose nor double-count flow), the tiles are written, the tiles version is bumped and the
-- processing set is deleted. The sums are the ones models.heatmap.aggregate_tile_values makes (the
-- reference this script is tested against); call_flow / put_flow split net flow between the calls and the
-- puts; a missing contract hash or counter adds 0. Counters are decimal integers (ingest writes them so);
-- one that Lua does not read as a whole number ("abc", "1.5", "", "nan") makes the script write nothing and
-- answer the error "NOT_INTEGER …", and the caller runs the reference itself (which skips that contract).
-- Deliberately not checked, to keep the per-contract cost down: other spellings of a whole number ("1e3",
-- "0x10", "5.0"), which Lua reads as that number and the reference skips — no writer produces them.
--
-- Exactness: Lua numbers are doubles, exact for integers below 2^53. Every partial sum of a tile is bounded
-- by the sum of the absolute values of all its counters, so while that stays below 2^53 every sum is exact.
-- Otherwise (a tile above ~$9 billion of premium) nothing is written and the script answers the error
-- "OVERFLOW"; the caller then sums that run in Python with big integers.
--
-- If the epoch was retired meanwhile (its meta has a TTL), the tiles and the version get that TTL too.
--
-- KEYS[1]  epoch:{U}:<E>:heatmap:tiles              HASH    tile -> packed counters (models.heatmap.pack_tile)
-- KEYS[2]  epoch:{U}:<E>:heatmap:tiles_version      STRING
-- KEYS[3]  epoch:{U}:<E>:heatmap:dirty_processing   SET
-- KEYS[4]  massive:epoch:{U}:<E>:meta               HASH
-- KEYS[5…] epoch:{U}:<E>:heatmap:contract:<cid>     HASH    the calls of tile 1, its puts, the calls of tile 2, …
-- ARGV     tile_1, calls_1, puts_1, tile_2, …        tile index and how many of the following KEYS are its
--                                                    calls, then its puts
-- Returns  { new tiles version, then per tile 8 integers: tile, net flow, buy, sell, volume, trades,
--           call flow, put flow (micro-dollars; what it wrote, packed, under that tile) }
--          or the error "OVERFLOW …" / "NOT_INTEGER …" (nothing written)

local EXACT = 9007199254740992
local call, tonumber, format = redis.call, tonumber, string.format

local out = {}
local reply = {}
local k = 5
for g = 1, #ARGV, 3 do
  local buy, sell, volume, trades, magnitude = 0, 0, 0, 0, 0
  local flows = { 0, 0 }  -- calls, puts
  for part = 1, 2 do
    local flow = 0
    local last = k + tonumber(ARGV[g + part]) - 1
    for i = k, last do
      local v = call('HMGET', KEYS[i], 'flow_micro', 'buy_micro', 'sell_micro', 'volume', 'trades')
      local f, b, s, vo, t = tonumber(v[1] or 0), tonumber(v[2] or 0), tonumber(v[3] or 0), tonumber(v[4] or 0),
        tonumber(v[5] or 0)
      if not (f and b and s and vo and t) or f % 1 ~= 0 or b % 1 ~= 0 or s % 1 ~= 0 or vo % 1 ~= 0 or t % 1 ~= 0 then
        return redis.error_reply('NOT_INTEGER a counter of ' .. KEYS[i] .. ' is not an integer')
      end
      flow = flow + f
      buy = buy + b
      sell = sell + s
      volume = volume + vo
      trades = trades + t
      if f < 0 then magnitude = magnitude - f else magnitude = magnitude + f end
      if b < 0 then magnitude = magnitude - b else magnitude = magnitude + b end
      if s < 0 then magnitude = magnitude - s else magnitude = magnitude + s end
      if vo < 0 then magnitude = magnitude - vo else magnitude = magnitude + vo end
      if t < 0 then magnitude = magnitude - t else magnitude = magnitude + t end
    end
    k = last + 1
    flows[part] = flow
  end
  if magnitude >= EXACT then
    return redis.error_reply('OVERFLOW tile ' .. ARGV[g] .. ' sums reach 2^53')
  end
  local flow, n = flows[1] + flows[2], #reply
  reply[n + 1], reply[n + 2], reply[n + 3], reply[n + 4] = tonumber(ARGV[g]), flow, buy, sell
  reply[n + 5], reply[n + 6], reply[n + 7], reply[n + 8] = volume, trades, flows[1], flows[2]
  out[#out + 1] = ARGV[g]
  out[#out + 1] = format('%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f', flow, buy, sell, volume, trades, flows[1], flows[2])
end

for i = 1, #out, 4000 do
  redis.call('HSET', KEYS[1], unpack(out, i, math.min(i + 3999, #out)))
end
local version = redis.call('INCR', KEYS[2])
redis.call('DEL', KEYS[3])
local ttl = redis.call('PTTL', KEYS[4])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
table.insert(reply, 1, version)
return reply
