-- ingest_batch.lua — apply one batch of WebSocket quotes and trades to one epoch of one underlying.
--
-- The events of each contract are applied in the order given (contracts are independent of each other).
-- Only contract hashes that already exist are written (the WebSocket mutates state, never structure): an
-- event for a hash without a multiplier is counted as missing and skipped. Per contract and event type the
-- sequence number must increase (quote_q / trade_q in the heatmap hash), so a duplicate or out-of-order
-- event — also one replayed after a restart — is counted and dropped; unless the event is at least the
-- restart gap (ARGV[4], ms) newer than the newest of its kind stored (quote_ts_ms, last_trade_ts_ms): the
-- feed's numbering started again, the event is applied and counted as a restart. A resent batch is never
-- that much newer than what it left, and one absurd sequence number holds a contract only until the feed's
-- clock passes its event's time (ingest bounds event times to a window around their receive time).
-- A trade older than the newest stored (a late print) counts in every counter but leaves the last trade
-- (last_price, last_trade_ts_ms) to the newer one.
--
-- A quote becomes the quote in force: the trades after it are classified against it.
-- A trade is classified by the quote rule against the quote in force, exactly as models/heatmap.py's
-- classify_trade (the reference this script is tested against): price ≥ ask → buy, ≤ bid → sell, inside →
-- the nearer side, exactly the midpoint → unsigned; a locked quote signs only prints through it; no quote,
-- ask ≤ 0, a negative bid, a crossed or a stale quote → unsigned. A zero bid under a positive ask is a real
-- one-sided market. Prices are compared in integer micro-dollars (floor(x·1e6 + 0.5)), so the midpoint test
-- is exact. Premium = price × size × multiplier in integer micro-dollars, so every sum is exact.
--
-- Redis work per contract, not per event (each redis.call costs about as much as the whole Lua loop over a
-- contract's events, so there are as few as possible, and the values written are the strings ingest sent):
--   a contract whose only event is one quote (about two thirds of the contracts of a busy batch: ingest
--     conflates consecutive quotes) comes in a section of its own, as six plain arguments — no JSON to decode, one
--     key: one HGET of quote_q (quote_q is only ever written beside a multiplier — by chain, "0" in the
--     HSET that creates the hash, and by this script into a hash with a multiplier — so a hash holding one
--     exists; a hash without one, written before chain created it: one more HGET of multiplier decides), then, if it is
--     newer, one HSET of the quote (bid ask bid_size ask_size quote_ts_ms quote_q); other contracts with
--     quotes only, the same: the last applied quote is written;
--   with a trade: one HMGET (multiplier, sequence numbers, the stored quote, the counters, the slot, the last
--     trade's time); one HINCRBY of the GEX hash's volume — the contract's first write: if it fails for a
--     corrupted GEX hash (wrong type, a volume that is not an integer), nothing of the contract is written and
--     it is counted as corrupt; if it fails for any other reason (out of memory, a read-only replica: only
--     ever the script's first write), the script stops with that error, nothing written; one HSET of the last
--     applied quote, the last applied trade (last_price last_trade_ts_ms trade_q) and the counters
--     flow_micro (signed), buy_micro, sell_micro, volume, trades (a counter no trade of the batch changed is
--     not written; one whose sum would reach 2^53 is added by HINCRBY instead, so sums stay exact — and one
--     HINCRBY would take beyond 2^63 is left as it is and counted as bad, never a script error);
--     and one SETRANGE of the contract's counter record (its five counters after the batch, at its slot in
--     the epoch's counters string — the heatmap worker's one read of every contract; a record with a counter
--     that is not an exact integer below 2^53 is written as the unreadable mark, trades = -1, and the worker
--     sums that tile from the hashes; no record is written when the string does not exist or is too short);
--   dirty set: SADD of every contract with an applied trade, in slices of 4,000 (a dirty set created after
--     the epoch was retired gets the contract hashes' remaining TTL).
-- Before any write the dirty set and the counters string are checked to be a set and a string (or absent):
-- a call refused for a corrupted key of the epoch writes nothing at all. Every later read or write that a
-- corrupted contract key could fail is a redis.pcall: the script never stops half-way.
--
-- The chain (pipelined ingest): ingest may send a call before the reply of its previous call of the same
-- underlying has come back. Such a call names the mark the previous one left (ARGV[2]) and is applied only
-- if that mark is the one stored: had the previous call failed (an error reply: refused whole — a corrupted
-- epoch key, out of memory, NOSCRIPT), applying this one first would let its newer sequence numbers drop
-- the failed call's events when ingest retries it. Refused, nothing is written and ingest retries both, in order.
-- Every applied call leaves its own mark (ARGV[3]; none if empty). An empty ARGV[2]: no check (nothing of
-- the underlying is in flight).
--
-- KEYS[1]             epoch:{U}:<E>:heatmap:dirty_contracts   SET
-- KEYS[2]             epoch:{U}:<E>:heatmap:counters          STRING  40-byte records (models.heatmap.RECORD_FORMAT)
-- KEYS[3]             massive:ingest:chain:{U}                STRING  the mark of the last applied call
-- KEYS[3 + j]         epoch:{U}:<E>:heatmap:contract:<qid_j>  HASH  (j = 1 … m, the contracts whose only event
--                     is one quote)
-- KEYS[3 + m + 2i - 1] epoch:{U}:<E>:heatmap:contract:<cid_i> HASH  (i = 1 … n, the other contracts)
-- KEYS[3 + m + 2i]    epoch:{U}:<E>:gex:contract:<cid_i>      HASH
-- ARGV[1]             maximum quote age for classification, ms
-- ARGV[2]             the mark the previous call left, or "" (no check)
-- ARGV[3]             this call's mark
-- ARGV[4]             the sequence restart gap, ms
-- ARGV[5]             m
-- ARGV[5 + 6j - 5 … 5 + 6j]  qid_j's quote, as the text to store: bid, ask, bid_size, ask_size, ts_ms, q
-- ARGV[5 + 6m + i]    cid_i (i = 1 … n, in KEYS order)
-- ARGV[6 + 6m + n]    JSON array of n arrays: array i holds the events of cid_i in order, flat, each introduced by
--                its kind:  0, bid, ask, bid_size, ask_size, ts_ms, q     a quote (7 values)
--                           1, price, size, ts_ms, q                      a trade (5 values)
--                each value a JSON number or a string of decimal text (prices: Python's repr of the float).
--                Stored values are written as given: ingest sends the last quote and the last trade of each
--                contract — the ones stored — as strings, so Redis formats no number (a price given as a
--                number is stored as the shortest text that reads back as it; counters as integer text).
-- Returns        {quotes applied, trades applied, out-of-sequence dropped, missing contracts, buys, sells,
--                 bad counters, 1, corrupt contracts, sequence restarts}  (a stored counter that is not an integer is left as
--                 it is and counted; a contract whose heatmap or GEX key has the wrong type, or whose GEX
--                 volume is not an integer, is skipped whole and counted as corrupt — never a script error
--                 half-way: one corrupt key must not stop the feed, nor leave other contracts written but
--                 not marked dirty), or ten zeros when the chain refused the call (nothing written)

if ARGV[2] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[2] then
  return { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 } -- the previous call did not land: nothing is applied before it
end
if not ({ none = true, set = true })[redis.call('TYPE', KEYS[1]).ok] then
  return redis.error_reply('WRONGTYPE the dirty set ' .. KEYS[1] .. ' is not a set')
end
if not ({ none = true, string = true })[redis.call('TYPE', KEYS[2]).ok] then
  return redis.error_reply('WRONGTYPE the counter records ' .. KEYS[2] .. ' are not a string')
end
local max_age = tonumber(ARGV[1])
local gap = tonumber(ARGV[4])
local m = tonumber(ARGV[5])
local n = (#KEYS - 3 - m) / 2
local batch = n > 0 and cjson.decode(ARGV[6 + 6 * m + n]) or {}
local LIMIT = 9007199254740992 -- 2^53: integers below it are exact in a Lua number
local floor, format, call, tonumber, match = math.floor, string.format, redis.call, tonumber, string.match
local pack, RECORD, UNREADABLE = struct.pack, '<i8i8i8i8i8', struct.pack('<i8i8i8i8i8', 0, 0, 0, 0, -1)
local records = nil -- length of the counters string, read at the first trade of the batch
local dirty_ttl_key = nil -- the first contract marked dirty (its hash's TTL is the epoch's)

-- a price as stored: a string as given (ingest sends repr text), a number as the shortest text that reads
-- back as it (Python's repr of the float)
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

local function micro(x)
  x = tonumber(x)
  if x == nil then
    return nil
  end
  return floor(x * 1000000 + 0.5)
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

local quotes, trades, stale, missing, buys, sells, bad, corrupt, restarts = 0, 0, 0, 0, 0, 0, 0, 0, 0
local K, V = KEYS, ARGV
-- redis.pcall answers an error (a contract key of the wrong type, a GEX volume that is not an integer) as a
-- table with a field err; HMGET answers an array, HINCRBY a number (tested inline)
local pcall_ = redis.pcall

-- the sequence rule: is an event (sequence number q, time ts) after the newest stored (sq, sts; sts nil: its
-- time is not known, so no restart can be told)? Counts a restart when it is only by its time.
local function newer(q, ts, sq, sts)
  if q > sq then
    return true
  end
  if sts ~= nil and ts >= sts + gap then
    restarts = restarts + 1
    return true
  end
  return false
end

-- the contracts whose only event is one quote
for j = 1, m do
  local key, v = K[3 + j], 5 + 6 * j -- the quote: V[v - 5 … v]
  local stored = pcall_('HMGET', key, 'quote_q', 'quote_ts_ms')
  if stored.err then
    corrupt = corrupt + 1
  elseif stored[1] == false and call('HGET', key, 'multiplier') == false then
    missing = missing + 1
  elseif not newer(tonumber(V[v]), tonumber(V[v - 1]), tonumber(stored[1] or '0') or 0,
      tonumber(stored[2] or '')) then
    stale = stale + 1
  else
    call('HSET', key, 'bid', V[v - 5], 'ask', V[v - 4], 'bid_size', V[v - 3], 'ask_size', V[v - 2], 'quote_ts_ms',
      V[v - 1], 'quote_q', V[v])
    quotes = quotes + 1
  end
end

-- the other contracts: K[base + 2i - 1], K[base + 2i] and V[args + i] are those of contract i
local base, args = 3 + m, 5 + 6 * m
local dirty, ndirty = {}, 0
local COUNTERS = { 'flow_micro', 'buy_micro', 'sell_micro', 'volume', 'trades' }
local fields, delta, total = {}, {}, {} -- reused for every contract (HSET takes fields[1 … nf])

-- the last applied of a contract's quotes, or nil; stale ones counted
local function last_quote(A, e, last, quote_q, quote_ts)
  local at = nil
  while e <= last do
    local q, ts = tonumber(A[e + 6]), tonumber(A[e + 5])
    if not newer(q, ts, quote_q, quote_ts) then
      stale = stale + 1
    else
      quote_q, quote_ts, at = q, math.max(quote_ts or ts, ts), e
      quotes = quotes + 1
    end
    e = e + 7
  end
  return at
end

-- an error of a redis.pcall that a corrupted contract key explains (the contract is skipped and counted); any
-- other (out of memory, a read-only replica …) stops the script
local function corruption(err)
  return string.sub(err, 1, 9) == 'WRONGTYPE' or string.find(err, 'not an integer', 1, true) ~= nil
      or string.find(err, 'overflow', 1, true) ~= nil
end

for i = 1, n do
  local A = batch[i]
  local last = #A
  local key = K[base + 2 * i - 1]
  local e = 1
  while e <= last and A[e] == 0 do -- quotes only (the common case): the loop runs to the end
    e = e + 7
  end

  if e > last then -- quotes only: no classification, no counters — read only what decides sequence
    local stored = pcall_('HMGET', key, 'quote_q', 'quote_ts_ms')
    if stored.err then
      corrupt = corrupt + 1
    elseif stored[1] == false and call('HGET', key, 'multiplier') == false then
      missing = missing + last / 7
    else
      local a = last_quote(A, 1, last, tonumber(stored[1] or '0') or 0, tonumber(stored[2] or ''))
      if a then
        call('HSET', key, 'bid', text(A[a + 1]), 'ask', text(A[a + 2]), 'bid_size', A[a + 3], 'ask_size',
          A[a + 4], 'quote_ts_ms', A[a + 5], 'quote_q', A[a + 6])
      end
    end
  else
    local f = pcall_('HMGET', key, 'multiplier', 'quote_q', 'trade_q', 'bid', 'ask', 'quote_ts_ms',
      'flow_micro', 'buy_micro', 'sell_micro', 'volume', 'trades', 'slot', 'last_trade_ts_ms')
    if f.err then
      corrupt = corrupt + 1
    elseif f[1] == false then
      e = 1
      while e <= last do
        missing = missing + 1
        e = e + (A[e] == 0 and 7 or 5)
      end
    else
      local mult = tonumber(f[1]) or 100
      local quote_q, trade_q = tonumber(f[2] or '0') or 0, tonumber(f[3] or '0') or 0
      local bid, ask = f[4] and micro(f[4]) or nil, f[5] and micro(f[5]) or nil
      local quote_ts = tonumber(f[6] or '') or nil
      -- the newest quote and trade times (the sequence rule's); the last trade kept is the newest by time
      local newest_quote, newest_trade = quote_ts, tonumber(f[13] or '') -- nil: not known
      local quote_at, trade_at, micro_at = nil, nil, nil -- the last applied quote and trade; the quote in bid / ask
      local last_at = nil -- the applied trade with the newest time, if newer than the stored last trade
      local flow, buy, sell, volume, count, nbuy, nsell, nquotes = 0, 0, 0, 0, 0, 0, 0, 0
      e = 1
      while e <= last do
        if A[e] == 0 then
          local q, ts = tonumber(A[e + 6]), tonumber(A[e + 5])
          if not newer(q, ts, quote_q, newest_quote) then
            stale = stale + 1
          else
            quote_q, quote_at = q, e -- bid / ask / time are worked out only if a trade needs them
            if newest_quote == nil or ts > newest_quote then
              newest_quote = ts
            end
            nquotes = nquotes + 1
          end
          e = e + 7
        else
          local q, ts = tonumber(A[e + 4]), tonumber(A[e + 3])
          if not newer(q, ts, trade_q, newest_trade) then
            stale = stale + 1
          else
            if quote_at ~= micro_at then
              bid, ask, micro_at = micro(A[quote_at + 1]), micro(A[quote_at + 2]), quote_at
              quote_ts = tonumber(A[quote_at + 5])
            end
            local price, size = micro(A[e + 1]), tonumber(A[e + 2])
            local sign = classify(bid, ask, quote_ts, price, ts)
            if sign ~= 0 then
              local premium = price * size * mult
              if sign > 0 then
                flow, buy, nbuy = flow + premium, buy + premium, nbuy + 1
              else
                flow, sell, nsell = flow - premium, sell + premium, nsell + 1
              end
            end
            volume, count = volume + size, count + 1
            trade_q, trade_at = q, e
            if newest_trade == nil or ts >= newest_trade then
              newest_trade, last_at = ts, e
            end
          end
          e = e + 5
        end
      end
      local nf, written = 0, true
      if trade_at then
        if records == nil then
          records = call('STRLEN', KEYS[2])
        end
        -- the contract's first write: if it fails (a GEX hash that is not a hash, or its volume not an
        -- integer), nothing of the contract is written and it is counted as corrupt; any other failure (out
        -- of memory, read-only: only ever the script's first write) stops the script, nothing written
        local added = pcall_('HINCRBY', K[base + 2 * i], 'volume', format('%d', volume))
        written = type(added) == 'number'
        if not written and not corruption(added.err) then
          return redis.error_reply(added.err)
        end
      end
      if not written then
        corrupt = corrupt + 1
        quote_at, trade_at = nil, nil
      end
      quotes = quotes + (written and nquotes or 0)
      if quote_at then
        local a = quote_at
        fields[1], fields[2], fields[3], fields[4] = 'bid', text(A[a + 1]), 'ask', text(A[a + 2])
        fields[5], fields[6], fields[7], fields[8] = 'bid_size', A[a + 3], 'ask_size', A[a + 4]
        fields[9], fields[10], fields[11], fields[12] = 'quote_ts_ms', A[a + 5], 'quote_q', A[a + 6]
        nf = 12
      end
      if trade_at then
        fields[nf + 1], fields[nf + 2] = 'trade_q', A[trade_at + 4]
        nf = nf + 2
        if last_at then
          fields[nf + 1], fields[nf + 2] = 'last_price', text(A[last_at + 1])
          fields[nf + 3], fields[nf + 4] = 'last_trade_ts_ms', A[last_at + 3]
          nf = nf + 4
        end
        delta[1], delta[2], delta[3], delta[4], delta[5] = flow, buy, sell, volume, count
        local exact = true -- every counter after the batch an integer below 2^53 (the record can hold it)
        for k = 1, 5 do
          local changed = k >= 4 or (k == 1 and nbuy + nsell > 0) or (k == 2 and nbuy > 0) or (k == 3 and nsell > 0)
          local stored = f[6 + k]
          local current = stored == false and 0 or tonumber(stored)
          local sum = current and current + (changed and delta[k] or 0)
          if sum and current == floor(current) and current > -LIMIT and current < LIMIT and sum > -LIMIT
              and sum < LIMIT then
            total[k] = sum
            if changed then
              fields[nf + 1], fields[nf + 2] = COUNTERS[k], format('%d', sum) -- exact below 2^53
              nf = nf + 2
            elseif stored and not match(stored, '^%-?%d+$') then
              exact = false -- kept as it is ("1e3", " 7"): the reference reads no integer there, nor may the record
            end
          else
            exact = false
            if not changed then -- left as it is
            elseif type(stored) == 'string' and string.match(stored, '^%-?%d+$') then
              -- an integer beyond 2^53: Redis adds (beyond 2^63 it refuses: left as it is, counted)
              local added = redis.pcall('HINCRBY', key, COUNTERS[k], format('%d', delta[k]))
              if type(added) == 'table' and added.err then
                bad = bad + 1
              end
            else
              bad = bad + 1 -- not an integer: HINCRBY would fail the whole script; leave it, count it
            end
          end
        end
        local slot = tonumber(f[12] or '')
        if slot and slot >= 0 and slot == floor(slot) and (slot + 1) * 40 <= records then
          call('SETRANGE', KEYS[2], slot * 40,
            exact and pack(RECORD, total[1], total[2], total[3], total[4], total[5]) or UNREADABLE)
        end
        ndirty = ndirty + 1
        dirty[ndirty] = V[args + i]
        dirty_ttl_key = dirty_ttl_key or key
        trades, buys, sells = trades + count, buys + nbuy, sells + nsell
      end
      if nf > 0 then
        call('HSET', key, unpack(fields, 1, nf))
      end
    end
  end
end

-- SADD in slices: unpack is bounded by Lua's C stack
for s = 1, ndirty, 4000 do
  call('SADD', KEYS[1], unpack(dirty, s, math.min(s + 3999, ndirty)))
end
-- A retired epoch's keys carry the retirement TTL; a dirty set created after retirement inherits it from the
-- contract hashes, so no key can outlive its epoch.
if ndirty > 0 and call('PTTL', KEYS[1]) == -1 then
  local ttl = call('PTTL', dirty_ttl_key)
  if ttl > 0 then
    call('PEXPIRE', KEYS[1], ttl)
  end
end
if ARGV[3] ~= '' then
  call('SET', KEYS[3], ARGV[3])
end
return { quotes, trades, stale, missing, buys, sells, bad, 1, corrupt, restarts }
