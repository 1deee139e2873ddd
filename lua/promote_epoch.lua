-- promote_epoch.lua — make a warming epoch the active one, atomically.
--
-- Promotes only when the pointer still holds the expected previous epoch (compare-and-set), the epoch is
-- warming and complete, and every required component has accepted it — or the epoch has been warming
-- longer than the maximum warming time (then it is promoted anyway and the missing components reported).
-- In the same step the previous epoch is marked retired, leaves the live set, and every one of its keys
-- gets the retirement TTL; a notification goes out on the epochs channel.
--
-- KEYS[1]  massive:epoch:active:{U}          STRING  the active pointer
-- KEYS[2]  massive:epochs:live:{U}           ZSET    live epochs
-- KEYS[3]  massive:epoch:{U}:<new>:meta      HASH    the warming epoch's meta
-- KEYS[4]  massive:epoch:{U}:<new>:ready     SET     components that accepted it
-- KEYS[5]  massive:epoch:{U}:<old>:meta      HASH    the previous epoch's meta (KEYS[3] again when none)
-- KEYS[6…] every key of the previous epoch, to be given the TTL (none when there is no previous epoch)
-- ARGV[1]  new epoch id
-- ARGV[2]  expected current active epoch id ("" when none)
-- ARGV[3]  retirement TTL, seconds
-- ARGV[4]  now, Unix ms
-- ARGV[5]  maximum warming time, ms
-- ARGV[6]  notification channel
-- ARGV[7]  underlying
-- ARGV[8…] required components
-- Returns  {"promoted", missing-components-csv} | {"waiting", missing-csv} | {"stale", current-active}
--          | {"not_warming", state} | {"incomplete", ""}

local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[2] then
  return {'stale', current}
end
local meta = redis.call('HMGET', KEYS[3], 'state', 'complete', 'created_ms')
if meta[1] ~= 'warming' then
  return {'not_warming', meta[1] or ''}
end
if meta[2] ~= '1' then
  return {'incomplete', ''}
end
local missing = {}
for i = 8, #ARGV do
  if redis.call('SISMEMBER', KEYS[4], ARGV[i]) == 0 then
    missing[#missing + 1] = ARGV[i]
  end
end
local now = tonumber(ARGV[4])
local missing_csv = table.concat(missing, ',')
if #missing > 0 and now - tonumber(meta[3] or now) < tonumber(ARGV[5]) then
  return {'waiting', missing_csv}
end

redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[3], 'state', 'active', 'promoted_ms', ARGV[4], 'missing_at_promotion', missing_csv)
if current ~= '' and current ~= ARGV[1] then
  redis.call('HSET', KEYS[5], 'state', 'retired', 'retired_ms', ARGV[4])
  redis.call('ZREM', KEYS[2], current)
  local ttl = tonumber(ARGV[3])
  for i = 6, #KEYS do
    redis.call('EXPIRE', KEYS[i], ttl)
  end
end
redis.call('PUBLISH', ARGV[6], cjson.encode({
  underlying = ARGV[7], epoch = ARGV[1], state = 'active', previous = current, ts_ms = now,
  missing = missing_csv
}))
return {'promoted', missing_csv}
