-- recompute_tiles.lua — recompute heatmap tiles from their contracts' current state and finish the run.
--
-- The caller (fabric/tiles.py) took the dirty contracts (take_dirty.lua) and found, in the epoch's layout,
-- every tile holding one of them and every contract of those tiles. Here, in one atomic step, each tile is
-- summed from the live counters of all its contracts (never patched with a delta, so a repeated or killed
-- run can neither lose nor double-count flow), the tiles are written, the tiles version is bumped and the
-- processing set is deleted. The sums are the ones models.heatmap.aggregate_tile_values makes (the
-- reference this script is tested against): a missing contract hash or counter (or "") adds 0, a contract
-- with a non-integer counter is skipped; call_flow / put_flow split net flow between the calls and the puts.
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
--          or the error "OVERFLOW …"

local EXACT = 9007199254740992
local function integer(text)
  if not text or text == '' then return 0 end
  local n = tonumber(text)
  if n == nil or n ~= math.floor(n) then return nil end
  return n
end
local function text(n)
  return string.format('%.0f', n)
end

local out = {}
local reply = {}
local k = 5
for g = 1, #ARGV, 3 do
  local flow, buy, sell, volume, trades, magnitude = 0, 0, 0, 0, 0, 0
  local side = {}
  for part = 1, 2 do
    local part_flow = 0
    local last = k + tonumber(ARGV[g + part]) - 1
    for i = k, last do
      local v = redis.call('HMGET', KEYS[i], 'flow_micro', 'buy_micro', 'sell_micro', 'volume', 'trades')
      local f, b, s, vo, t = integer(v[1]), integer(v[2]), integer(v[3]), integer(v[4]), integer(v[5])
      if f and b and s and vo and t then
        part_flow = part_flow + f
        buy = buy + b
        sell = sell + s
        volume = volume + vo
        trades = trades + t
        magnitude = magnitude + math.abs(f) + math.abs(b) + math.abs(s) + math.abs(vo) + math.abs(t)
      end
    end
    k = last + 1
    side[part] = part_flow
    flow = flow + part_flow
  end
  if magnitude >= EXACT then
    return redis.error_reply('OVERFLOW tile ' .. ARGV[g] .. ' sums reach 2^53')
  end
  local n = #reply
  reply[n + 1], reply[n + 2], reply[n + 3], reply[n + 4] = tonumber(ARGV[g]), flow, buy, sell
  reply[n + 5], reply[n + 6], reply[n + 7], reply[n + 8] = volume, trades, side[1], side[2]
  out[#out + 1] = ARGV[g]
  out[#out + 1] = text(flow) .. ',' .. text(buy) .. ',' .. text(sell) .. ',' .. text(volume) .. ','
    .. text(trades) .. ',' .. text(side[1]) .. ',' .. text(side[2])
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
