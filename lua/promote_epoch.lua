-- promote_epoch.lua — make a warming epoch the active one, with its prepared views, atomically.
--
-- Promotes only when the pointer still holds the expected previous epoch (compare-and-set), the epoch is
-- warming and complete, and every required component has accepted it — or the epoch has been warming
-- longer than the maximum warming time (then it is promoted anyway and the missing components reported).
-- In the same step:
--   * each model's prepared view of the new epoch becomes its published view (version bumped, one
--     notification per model on the models channel); a model with no prepared view has its old view
--     removed, so no subscriber ever sees the new topology with an old view (or an old view after it);
--   * the previous epoch is marked retired, leaves the live set, and every one of its keys gets the TTL;
--   * a notification goes out on the epochs channel.
--
-- KEYS[1]  massive:epoch:active:{U}          STRING  the active pointer
-- KEYS[2]  massive:epochs:live:{U}           ZSET    live epochs
-- KEYS[3]  massive:epoch:{U}:<new>:meta      HASH    the warming epoch's meta
-- KEYS[4]  massive:epoch:{U}:<new>:ready     SET     components that accepted it
-- KEYS[5]  massive:epoch:{U}:<old>:meta      HASH    the previous epoch's meta (KEYS[3] again when none)
-- KEYS[6 … 5+3m]  per model j: epoch:{U}:<new>:<model>:prepared_view, mmaker:<model>:model:{U},
--                 mmaker:<model>:version:{U}
-- KEYS[6+3m …]    every key of the previous epoch, to be given the TTL (none when there is none)
-- ARGV[1]  new epoch id                ARGV[2] expected current active epoch id ("" when none)
-- ARGV[3]  retirement TTL, seconds     ARGV[4] now, Unix ms      ARGV[5] maximum warming time, ms
-- ARGV[6]  epochs channel              ARGV[7] underlying        ARGV[8] models channel
-- ARGV[9]  m, the number of models     ARGV[10 … 9+m] model names
-- ARGV[10+m …] required components
-- Returns  {"promoted", missing-csv, published-models-csv} | {"waiting", missing-csv, ""}
--          | {"stale", current-active, ""} | {"not_warming", state, ""} | {"incomplete", "", ""}

local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[2] then
  return {'stale', current, ''}
end
local meta = redis.call('HMGET', KEYS[3], 'state', 'complete', 'created_ms')
if meta[1] ~= 'warming' then
  return {'not_warming', meta[1] or '', ''}
end
if meta[2] ~= '1' then
  return {'incomplete', '', ''}
end
local m = tonumber(ARGV[9])
local missing = {}
for i = 10 + m, #ARGV do
  if redis.call('SISMEMBER', KEYS[4], ARGV[i]) == 0 then
    missing[#missing + 1] = ARGV[i]
  end
end
local now = tonumber(ARGV[4])
local missing_csv = table.concat(missing, ',')
if #missing > 0 and now - tonumber(meta[3] or now) < tonumber(ARGV[5]) then
  return {'waiting', missing_csv, ''}
end

redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[3], 'state', 'active', 'promoted_ms', ARGV[4], 'missing_at_promotion', missing_csv)

local published = {}
for j = 1, m do
  local prepared_key, view_key, version_key = KEYS[3 + 3 * j], KEYS[4 + 3 * j], KEYS[5 + 3 * j]
  local body = redis.call('GET', prepared_key)
  if body then
    local version = redis.call('INCR', version_key)
    redis.call('SET', view_key, '{"version":' .. version .. ',' .. string.sub(body, 2))
    redis.call('DEL', prepared_key)
    redis.call('PUBLISH', ARGV[8], cjson.encode({ model = ARGV[9 + j], underlying = ARGV[7], version = version }))
    published[#published + 1] = ARGV[9 + j]
  else
    redis.call('DEL', view_key)
  end
end

if current ~= '' and current ~= ARGV[1] then
  redis.call('HSET', KEYS[5], 'state', 'retired', 'retired_ms', ARGV[4])
  redis.call('ZREM', KEYS[2], current)
  local ttl = tonumber(ARGV[3])
  for i = 6 + 3 * m, #KEYS do
    redis.call('EXPIRE', KEYS[i], ttl)
  end
end
redis.call('PUBLISH', ARGV[6], cjson.encode({
  underlying = ARGV[7], epoch = ARGV[1], state = 'active', previous = current, ts_ms = now,
  missing = missing_csv
}))
return {'promoted', missing_csv, table.concat(published, ',')}
