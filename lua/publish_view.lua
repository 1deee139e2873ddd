-- publish_view.lua — publish a model's complete view of the active epoch, or refuse.
--
-- The caller first SETs the complete view, its version already its first field ('{"version":N,…'), under a
-- staging key of its own (unique per publication, with a TTL, read by nobody else). Then this script: only if
-- the view was computed from the epoch that is active now, and N is the stored version + 1, the staged view
-- is RENAMEd onto the published key (one O(1) step: the view, up to a megabyte, is never copied through Lua)
-- and made persistent, the version becomes N and {model, underlying, version} is published. A view of a
-- warming epoch is instead stored as that epoch's prepared view, without the version field (the promotion
-- script publishes it in the same step as the switch), and the model is recorded as having accepted the
-- epoch. A view of any other epoch is refused. If N is not the next version (another publisher published
-- meanwhile) — or the staged view is not there or does not carry N — nothing is published and "stale" is
-- answered with the stored version: the caller stages again with the next one. The staged key is gone
-- after every answer. Nothing partial is ever visible.
--
-- KEYS[1]  massive:epoch:active:{U}             STRING  the active pointer
-- KEYS[2]  mmaker:<model>:model:{U}              STRING  the published view
-- KEYS[3]  mmaker:<model>:version:{U}            STRING  its version
-- KEYS[4]  massive:epoch:{U}:<E>:meta            HASH    the epoch the view was computed from
-- KEYS[5]  epoch:{U}:<E>:<model>:prepared_view   STRING  where a warming epoch's view waits
-- KEYS[6]  massive:epoch:{U}:<E>:ready           SET     components that accepted the epoch
-- KEYS[7]  mmaker:<model>:staged:{U}:<token>     STRING  the staged view '{"version":N,…}'
-- ARGV[1]  epoch id the view was computed from
-- ARGV[2]  N, the version the staged view carries
-- ARGV[3]  notification channel (mmaker:models)
-- ARGV[4]  model name      ARGV[5] underlying
-- Returns  {"published", N} | {"prepared", 0} | {"refused", state-of-that-epoch} | {"stale", stored version}

local head = '{"version":' .. ARGV[2] .. ','
local stored = tonumber(redis.call('GET', KEYS[3]) or '0')
if redis.call('GETRANGE', KEYS[7], 0, #head - 1) ~= head then
  redis.call('DEL', KEYS[7])
  return { 'stale', stored }
end
local active = redis.call('GET', KEYS[1])
if active == ARGV[1] then
  if stored + 1 ~= tonumber(ARGV[2]) then
    redis.call('DEL', KEYS[7])
    return { 'stale', stored }
  end
  redis.call('SET', KEYS[3], ARGV[2])
  redis.call('RENAME', KEYS[7], KEYS[2])
  redis.call('PERSIST', KEYS[2]) -- (RENAME keeps the staged key's TTL)
  redis.call('PUBLISH', ARGV[3], cjson.encode({ model = ARGV[4], underlying = ARGV[5], version = stored + 1 }))
  return { 'published', stored + 1 }
end
local state = redis.call('HGET', KEYS[4], 'state')
if state == 'warming' then
  redis.call('SET', KEYS[5], '{' .. string.sub(redis.call('GET', KEYS[7]), #head + 1))
  redis.call('DEL', KEYS[7])
  redis.call('SADD', KEYS[6], ARGV[4])
  return { 'prepared', 0 }
end
redis.call('DEL', KEYS[7])
return { 'refused', state or '' }
