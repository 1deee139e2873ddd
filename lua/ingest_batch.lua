-- ingest_batch.lua — apply one batch of WebSocket quotes and trades to one epoch of one underlying.
--
-- The events of each contract are applied in the order given (contracts are independent of each other).
-- Only contract hashes that already exist are written (the WebSocket mutates state, never structure): an
-- event for a hash without a multiplier is counted as missing and skipped. Per contract and event type the
-- sequence number must increase (quote_q / trade_q in the heatmap hash), so a duplicate or out-of-order
-- event — also one replayed after a restart — is counted and dropped.
--
-- A quote becomes the quote in force: the trades after it are classified against it.
-- A trade is classified by the quote rule against the quote in force, exactly as models/heatmap.py's
-- classify_trade (the reference this script is tested against): price ≥ ask → buy, ≤ bid → sell, inside →
-- the nearer side, exactly the midpoint → unsigned; a locked quote signs only prints through it; no quote,
-- ask ≤ 0, a negative bid, a crossed or a stale quote → unsigned. A zero bid under a positive ask is a real
-- one-sided market. Prices are compared in integer micro-dollars (floor(x·1e6 + 0.5)), so the midpoint test
-- is exact. Premium = price × size × multiplier in integer micro-dollars, so every sum is exact.
--
-- Writes, per contract, after all its events (Redis work per contract, not per event):
--   heatmap hash: one HMGET (multiplier and sequence numbers; with a trade in the batch also the quote and
--     the counters), then one HSET of the final
--     values: the last applied quote (bid ask bid_size ask_size quote_ts_ms quote_q), the last applied
--     trade (last_price last_trade_ts_ms trade_q) and the counters flow_micro (signed), buy_micro,
--     sell_micro, volume, trades (a counter no trade of the batch changed is not written; one whose sum
--     would reach 2^53 is added by HINCRBY instead, so sums stay exact);
--   GEX hash: one HINCRBY volume; dirty set: one SADD of every contract with an applied trade (a dirty set
--   created after the epoch was retired gets the contract hashes' remaining TTL).
-- bid, ask and last_price are stored as decimal text: a string argument as given, a number as the shortest
-- text that reads back as it (Python's repr of the float).
--
-- KEYS[1]        epoch:{U}:<E>:heatmap:dirty_contracts   SET
-- KEYS[2i]       epoch:{U}:<E>:heatmap:contract:<cid_i>  HASH  (i = 1 … n, the contracts of the batch)
-- KEYS[2i + 1]   epoch:{U}:<E>:gex:contract:<cid_i>      HASH
-- ARGV[1]        maximum quote age for classification, ms
-- ARGV[1 + i]    cid_i (i = 1 … n, in KEYS order)
-- ARGV[n + 2]    JSON array of n arrays: array i holds the events of cid_i in order, flat, each introduced by
--                its kind:  0, bid, ask, bid_size, ask_size, ts_ms, q     a quote (7 values)
--                           1, price, size, ts_ms, q                      a trade (5 values)
--                prices as JSON numbers or strings of decimal text; sizes, times, sequence numbers integers.
-- Returns        {quotes applied, trades applied, out-of-sequence dropped, missing contracts, buys, sells}

local max_age = tonumber(ARGV[1])
local n = (#KEYS - 1) / 2
local batch = cjson.decode(ARGV[n + 2])
local LIMIT = 9007199254740992 -- 2^53: integers below it are exact in a Lua number
local floor, format = math.floor, string.format

local function micro(x)
  x = tonumber(x)
  if x == nil then
    return nil
  end
  return floor(x * 1000000 + 0.5)
end

local function text(x)
  if type(x) == 'string' then
    return x
  end
  local s = format('%.15g', x)
  if tonumber(s) ~= x then
    s = format('%.16g', x)
    if tonumber(s) ~= x then
      s = format('%.17g', x)
    end
  end
  if not s:find('[%.eni]') then
    s = s .. '.0'
  end
  return s
end

-- the quote rule on micro-dollars; bid / ask nil = no quote
local function classify(bid, ask, quote_ts, price, ts)
  if bid == nil or ask == nil or bid < 0 or ask <= 0 or bid > ask then
    return 0
  end
  if quote_ts == nil or ts - quote_ts > max_age then
    return 0
  end
  if bid == ask then
    if price > ask then
      return 1
    elseif price < bid then
      return -1
    end
    return 0
  end
  if price >= ask then
    return 1
  end
  if price <= bid then
    return -1
  end
  local twice = 2 * price
  if twice > bid + ask then
    return 1
  elseif twice < bid + ask then
    return -1
  end
  return 0
end

local quotes, trades, stale, missing, buys, sells = 0, 0, 0, 0, 0, 0
local dirty = {}
local COUNTERS = { 'flow_micro', 'buy_micro', 'sell_micro', 'volume', 'trades' }

for i = 1, n do
  local ev = batch[i]
  local len = #ev
  local key = KEYS[2 * i]
  local has_trade = false
  local p = 1
  while p <= len do
    if ev[p] == 1 then
      has_trade = true
      break
    end
    p = p + 7
  end
  local f
  if has_trade then
    f = redis.call('HMGET', key, 'multiplier', 'quote_q', 'trade_q', 'bid', 'ask', 'quote_ts_ms',
      'flow_micro', 'buy_micro', 'sell_micro', 'volume', 'trades')
  else -- quotes only: no classification, no counters — read only what decides existence and sequence
    f = redis.call('HMGET', key, 'multiplier', 'quote_q')
  end
  if f[1] == false then
    p = 1
    while p <= len do
      missing = missing + 1
      p = p + (ev[p] == 0 and 7 or 5)
    end
  else
    local mult = tonumber(f[1]) or 100
    local quote_q, trade_q = tonumber(f[2] or '0') or 0, tonumber(f[3] or '0') or 0
    local bid, ask = f[4] and micro(f[4]) or nil, f[5] and micro(f[5]) or nil
    local quote_ts = tonumber(f[6] or '') or nil
    local quote_at, trade_at, micro_at = nil, nil, nil -- positions of the last applied quote and trade
    local flow, buy, sell, volume, count, nbuy, nsell = 0, 0, 0, 0, 0, 0, 0
    p = 1
    while p <= len do
      if ev[p] == 0 then
        local q = ev[p + 6]
        if q <= quote_q then
          stale = stale + 1
        else
          quote_ts, quote_q = ev[p + 5], q
          quote_at = p -- bid / ask in micro-dollars are worked out only if a trade needs them
          quotes = quotes + 1
        end
        p = p + 7
      else
        local q = ev[p + 4]
        if q <= trade_q then
          stale = stale + 1
        else
          if quote_at ~= micro_at then
            bid, ask, micro_at = micro(ev[quote_at + 1]), micro(ev[quote_at + 2]), quote_at
          end
          local price, size = micro(ev[p + 1]), ev[p + 2]
          local sign = classify(bid, ask, quote_ts, price, ev[p + 3])
          if sign ~= 0 then
            local premium = price * size * mult
            if sign > 0 then
              flow, buy, nbuy = flow + premium, buy + premium, nbuy + 1
            else
              flow, sell, nsell = flow - premium, sell + premium, nsell + 1
            end
          end
          volume, count = volume + size, count + 1
          trade_q = q
          trade_at = p
        end
        p = p + 5
      end
    end

    local fields, nf = {}, 0
    if quote_at then
      local a = quote_at
      fields[1], fields[2], fields[3], fields[4] = 'bid', text(ev[a + 1]), 'ask', text(ev[a + 2])
      fields[5], fields[6], fields[7], fields[8] = 'bid_size', ev[a + 3], 'ask_size', ev[a + 4]
      fields[9], fields[10], fields[11], fields[12] = 'quote_ts_ms', ev[a + 5], 'quote_q', ev[a + 6]
      nf = 12
    end
    if trade_at then
      local a = trade_at
      fields[nf + 1], fields[nf + 2] = 'last_price', text(ev[a + 1])
      fields[nf + 3], fields[nf + 4] = 'last_trade_ts_ms', ev[a + 3]
      fields[nf + 5], fields[nf + 6] = 'trade_q', ev[a + 4]
      nf = nf + 6
      local delta = { flow, buy, sell, volume, count }
      for k = (nbuy + nsell > 0) and 1 or 4, 5 do
        if k ~= 2 and k ~= 3 or (k == 2 and nbuy > 0) or (k == 3 and nsell > 0) then
          local stored = f[6 + k]
          local current = stored == false and 0 or tonumber(stored)
          local total = current and current + delta[k]
          if total and current == floor(current) and current > -LIMIT and current < LIMIT and total > -LIMIT
              and total < LIMIT then
            fields[nf + 1], fields[nf + 2] = COUNTERS[k], total
            nf = nf + 2
          else
            redis.call('HINCRBY', key, COUNTERS[k], delta[k])
          end
        end
      end
      redis.call('HINCRBY', KEYS[2 * i + 1], 'volume', volume)
      dirty[#dirty + 1] = ARGV[1 + i]
      trades, buys, sells = trades + count, buys + nbuy, sells + nsell
    end
    if nf > 0 then
      redis.call('HSET', key, unpack(fields))
    end
  end
end

-- SADD in slices: unpack is bounded by Lua's C stack
for first = 1, #dirty, 4000 do
  redis.call('SADD', KEYS[1], unpack(dirty, first, math.min(first + 3999, #dirty)))
end
-- A retired epoch's keys carry the retirement TTL; a dirty set created after retirement inherits it from the
-- contract hashes, so no key can outlive its epoch.
if #dirty > 0 and redis.call('PTTL', KEYS[1]) == -1 then
  local ttl = redis.call('PTTL', KEYS[2])
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[1], ttl)
  end
end
return { quotes, trades, stale, missing, buys, sells }
