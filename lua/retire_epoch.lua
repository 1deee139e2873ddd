-- retire_epoch.lua — retire an epoch that is not active (a warming epoch superseded by a newer topology).
--
-- Refuses to retire the active epoch. Marks the epoch retired, removes it from the live set and gives
-- every one of its keys the retirement TTL; a notification goes out on the epochs channel.
--
-- KEYS[1]  massive:epoch:active:{U}      STRING  the active pointer
-- KEYS[2]  massive:epochs:live:{U}       ZSET    live epochs
-- KEYS[3]  massive:epoch:{U}:<E>:meta    HASH    the epoch's meta
-- KEYS[4…] every key of the epoch
-- ARGV[1]  epoch id
-- ARGV[2]  retirement TTL, seconds
-- ARGV[3]  now, Unix ms
-- ARGV[4]  notification channel
-- ARGV[5]  underlying
-- Returns  1 when retired, 0 when the epoch is the active one (nothing changed)

if redis.call('GET', KEYS[1]) == ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[3], 'state', 'retired', 'retired_ms', ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[1])
local ttl = tonumber(ARGV[2])
for i = 4, #KEYS do
  redis.call('EXPIRE', KEYS[i], ttl)
end
redis.call('PUBLISH', ARGV[4], cjson.encode({
  underlying = ARGV[5], epoch = ARGV[1], state = 'retired', ts_ms = tonumber(ARGV[3])
}))
return 1
