-- ingest_batch.lua — apply one batch of WebSocket quotes and trades to one epoch of one underlying.
--
-- Events are applied in the order given. Only contract hashes that already exist are written (the
-- WebSocket mutates state, never structure): an event for a missing hash is counted and skipped. Per
-- contract and event type the sequence number must increase (quote_q / trade_q in the heatmap hash), so a
-- duplicate or out-of-order event — also one replayed after a restart — is counted and dropped.
--
-- A quote sets bid, ask, bid_size, ask_size, quote_ts_ms, quote_q in the heatmap hash.
-- A trade is classified by the quote rule against the stored quote (price ≥ ask → buy, ≤ bid → sell,
-- inside → the nearer side, exactly the midpoint → unsigned; no quote, a one-sided, locked, crossed or
-- stale quote → unsigned). Prices are compared as integers of 1/10,000 so the midpoint test is exact.
-- Premium = price × size × multiplier, in integer cents (rounded half up), so sums are exact:
--   heatmap hash: HINCRBY flow_cents (signed), buy_cents or sell_cents, volume, trades;
--                 HSET last_price, last_trade_ts_ms, trade_q; the contract joins the dirty set.
--   GEX hash:     HINCRBY volume.
--
-- KEYS[1]        epoch:{U}:<E>:heatmap:dirty_contracts   SET
-- KEYS[2i]       epoch:{U}:<E>:heatmap:contract:<cid_i>  HASH  (i = 1 … n, the contracts of the batch)
-- KEYS[2i + 1]   epoch:{U}:<E>:gex:contract:<cid_i>      HASH
-- ARGV[1]        maximum quote age for classification, ms
-- ARGV[2 …]      n contract ids (cid_i, in KEYS order), then the events, each introduced by its kind:
--                "Q", i, bid, ask, bid_size, ask_size, ts_ms, q     (8 values)
--                "T", i, price, size, ts_ms, q                      (6 values)
--                prices as decimal strings, sizes, times and sequence numbers as integers.
-- Returns        {quotes applied, trades applied, out-of-sequence dropped, missing contracts, buys, sells}

local max_age = tonumber(ARGV[1])
local n = (#KEYS - 1) / 2
local cids = {}
for i = 1, n do
  cids[i] = ARGV[1 + i]
end

local function e4(text)
  local x = tonumber(text)
  if x == nil then
    return nil
  end
  return math.floor(x * 10000 + 0.5)
end

-- per contract state, loaded on first use: {exists, bid_e4, ask_e4, multiplier, quote_ts, quote_q, trade_q}
local state = {}
local function load(i)
  local s = state[i]
  if s == nil then
    local f = redis.call('HMGET', KEYS[2 * i], 'multiplier', 'bid', 'ask', 'quote_ts_ms', 'quote_q', 'trade_q')
    if f[1] == false then
      s = { exists = false }
    else
      s = {
        exists = true, mult = tonumber(f[1]), bid = f[2] and e4(f[2]) or nil, ask = f[3] and e4(f[3]) or nil,
        quote_ts = tonumber(f[4] or '') or nil, quote_q = tonumber(f[5] or '0') or 0,
        trade_q = tonumber(f[6] or '0') or 0
      }
    end
    state[i] = s
  end
  return s
end

local function classify(s, price, ts)
  local bid, ask = s.bid, s.ask
  if bid == nil or ask == nil or bid <= 0 or ask <= 0 or bid >= ask then
    return 0
  end
  if s.quote_ts == nil or ts - s.quote_ts > max_age then
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
local p = 2 + n
local last = #ARGV
while p <= last do
  local kind = ARGV[p]
  local i = tonumber(ARGV[p + 1])
  local s = load(i)
  if kind == 'Q' then
    local q = tonumber(ARGV[p + 7])
    if not s.exists then
      missing = missing + 1
    elseif q <= s.quote_q then
      stale = stale + 1
    else
      redis.call('HSET', KEYS[2 * i], 'bid', ARGV[p + 2], 'ask', ARGV[p + 3], 'bid_size', ARGV[p + 4],
        'ask_size', ARGV[p + 5], 'quote_ts_ms', ARGV[p + 6], 'quote_q', ARGV[p + 7])
      s.bid, s.ask, s.quote_ts, s.quote_q = e4(ARGV[p + 2]), e4(ARGV[p + 3]), tonumber(ARGV[p + 6]), q
      quotes = quotes + 1
    end
    p = p + 8
  else
    local q = tonumber(ARGV[p + 5])
    if not s.exists then
      missing = missing + 1
    elseif q <= s.trade_q then
      stale = stale + 1
    else
      local price = e4(ARGV[p + 2])
      local size = tonumber(ARGV[p + 3])
      local ts = tonumber(ARGV[p + 4])
      local sign = classify(s, price, ts)
      local cents = math.floor(price * size * (s.mult or 100) / 100 + 0.5)
      local key = KEYS[2 * i]
      if sign > 0 then
        redis.call('HINCRBY', key, 'flow_cents', cents)
        redis.call('HINCRBY', key, 'buy_cents', cents)
        buys = buys + 1
      elseif sign < 0 then
        redis.call('HINCRBY', key, 'flow_cents', -cents)
        redis.call('HINCRBY', key, 'sell_cents', cents)
        sells = sells + 1
      end
      redis.call('HINCRBY', key, 'volume', size)
      redis.call('HINCRBY', key, 'trades', 1)
      redis.call('HSET', key, 'last_price', ARGV[p + 2], 'last_trade_ts_ms', ARGV[p + 4], 'trade_q', ARGV[p + 5])
      redis.call('HINCRBY', KEYS[2 * i + 1], 'volume', size)
      redis.call('SADD', KEYS[1], cids[i])
      s.trade_q = q
      trades = trades + 1
    end
    p = p + 6
  end
end
return { quotes, trades, stale, missing, buys, sells }
