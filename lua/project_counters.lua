-- project_counters.lua — (re)write contracts' counter records from their heatmap hashes.
--
-- Ingest keeps each contract's counter record current in the same script call as its hash; this script
-- writes records from the hashes themselves, atomically, for contracts whose record is missing: an epoch
-- created by a version of mmaker without records (the heatmap worker calls this once for such an epoch), or
-- hashes written by hand (tests, benchmarks). It also stores each contract's slot in its hash, so ingest keeps
-- the record current from then on. The counters string is created at its full length if it does not exist
-- (zero records: nothing traded), with the epoch's remaining TTL if the epoch was retired.
--
-- A record holds the five counters flow_micro, buy_micro, sell_micro, volume, trades (absent = 0) as
-- little-endian int64 (models.heatmap.RECORD_FORMAT); a contract with a counter that is not decimal integer
-- text below 2^53 in magnitude gets the unreadable mark (trades = -1), so its tile is summed from the hashes.
--
-- A contract whose hash does not exist gets a zero record (and no slot: the hash is not created).
--
-- KEYS[1]      epoch:{U}:<E>:heatmap:counters          STRING
-- KEYS[2]      massive:epoch:{U}:<E>:meta              HASH
-- KEYS[2 + i]  epoch:{U}:<E>:heatmap:contract:<cid_i>  HASH   (i = 1 … n)
-- ARGV[1]      number of records of the epoch (every contract's slot is below it)
-- ARGV[1 + i]  slot of cid_i
-- Returns      {records written, of them marked unreadable}

local LIMIT = 9007199254740992
local pack, RECORD = struct.pack, '<i8i8i8i8i8'
local call, tonumber, floor = redis.call, tonumber, math.floor
local size = tonumber(ARGV[1]) * 40
if call('EXISTS', KEYS[2]) == 0 then -- the epoch is gone (expired): create nothing that would never expire
  return { 0, 0 }
end

if call('EXISTS', KEYS[1]) == 0 and size > 0 then
  call('SETRANGE', KEYS[1], size - 1, '\0')
  local ttl = call('PTTL', KEYS[2])
  if ttl > 0 then
    call('PEXPIRE', KEYS[1], ttl)
  end
end

local written, marked = 0, 0
local v = {}
for i = 1, #KEYS - 2 do
  local slot = tonumber(ARGV[1 + i])
  if slot and slot >= 0 and slot == floor(slot) and (slot + 1) * 40 <= size then
    local key = KEYS[2 + i]
    local f = call('HMGET', key, 'flow_micro', 'buy_micro', 'sell_micro', 'volume', 'trades', 'multiplier')
    if not f[6] then -- no contract hash (any more): nothing of it counts
      call('SETRANGE', KEYS[1], slot * 40, pack(RECORD, 0, 0, 0, 0, 0))
      written = written + 1
    else
      local exact = true
      for k = 1, 5 do
        local x = f[k] == false and 0 or (string.match(f[k], '^%-?%d+$') and tonumber(f[k]))
        if not x or x <= -LIMIT or x >= LIMIT then
          exact = false
        end
        v[k] = x
      end
      if exact then
        call('SETRANGE', KEYS[1], slot * 40, pack(RECORD, v[1], v[2], v[3], v[4], v[5]))
      else
        call('SETRANGE', KEYS[1], slot * 40, pack(RECORD, 0, 0, 0, 0, -1))
        marked = marked + 1
      end
      call('HSET', key, 'slot', ARGV[1 + i])
      written = written + 1
    end
  end
end
return { written, marked }
