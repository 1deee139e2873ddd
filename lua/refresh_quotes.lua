-- refresh_quotes.lua — bring the quotes of existing contracts up to date from a chain snapshot.
--
-- A contract whose quotes are not streamed (past the per-connection quote cap) would otherwise keep the
-- quote of the snapshot that created its epoch. Newer wins: a quote is written only when the snapshot's
-- quote time is later than the stored one, so a fresher streamed quote is never overwritten. Only
-- existing hashes are written.
--
-- KEYS[i]  epoch:{U}:<E>:heatmap:contract:<cid_i>   HASH   (i = 1 … n)
-- ARGV     5 values per contract, in KEYS order: quote_ts_ms, bid, ask, bid_size, ask_size ("" = missing)
-- Returns  the number of contracts whose quote was replaced

local replaced = 0
for i = 1, #KEYS do
  local o = (i - 1) * 5
  local ts = tonumber(ARGV[o + 1])
  if ts ~= nil and ARGV[o + 2] ~= '' and ARGV[o + 3] ~= '' then
    local stored = redis.call('HMGET', KEYS[i], 'multiplier', 'quote_ts_ms')
    if stored[1] ~= false and ts > (tonumber(stored[2] or '') or -1) then
      redis.call('HSET', KEYS[i], 'bid', ARGV[o + 2], 'ask', ARGV[o + 3], 'bid_size', ARGV[o + 4],
        'ask_size', ARGV[o + 5], 'quote_ts_ms', ARGV[o + 1])
      replaced = replaced + 1
    end
  end
end
return replaced
