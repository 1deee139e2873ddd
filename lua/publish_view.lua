-- publish_view.lua — publish a model's complete view of the active epoch, or refuse.
--
-- Only if the view was computed from the epoch that is active now: then the version is bumped, the
-- complete view is written with that version spliced in as its first field, and {model, underlying,
-- version} is published. A view of a warming epoch is instead stored as that epoch's prepared view (the
-- promotion script publishes it in the same step as the switch) and the model is recorded as having
-- accepted the epoch. A view of any other epoch is refused. Nothing partial is ever visible: the SET and the
-- APPEND that write it run in this one script.
--
-- KEYS[1]  massive:epoch:active:{U}             STRING  the active pointer
-- KEYS[2]  mmaker:<model>:model:{U}              STRING  the published view
-- KEYS[3]  mmaker:<model>:version:{U}            STRING  its version
-- KEYS[4]  massive:epoch:{U}:<E>:meta            HASH    the epoch the view was computed from
-- KEYS[5]  epoch:{U}:<E>:<model>:prepared_view   STRING  where a warming epoch's view waits
-- KEYS[6]  massive:epoch:{U}:<E>:ready           SET     components that accepted the epoch
-- ARGV[1]  epoch id the view was computed from
-- ARGV[2]  the view as a JSON object WITHOUT "version" and without its opening "{" (it holds other fields:
--          '"model":…}'), so the script writes it with SET + APPEND instead of copying it in Lua
-- ARGV[3]  notification channel (mmaker:models)
-- ARGV[4]  model name      ARGV[5] underlying
-- Returns  {"published", version} | {"prepared", 0} | {"refused", state-of-that-epoch}

local active = redis.call('GET', KEYS[1])
if active == ARGV[1] then
  local version = redis.call('INCR', KEYS[3])
  redis.call('SET', KEYS[2], '{"version":' .. version .. ',') -- then the rest: no Lua copy of a large view
  redis.call('APPEND', KEYS[2], ARGV[2])
  redis.call('PUBLISH', ARGV[3], cjson.encode({ model = ARGV[4], underlying = ARGV[5], version = version }))
  return { 'published', version }
end
local state = redis.call('HGET', KEYS[4], 'state')
if state == 'warming' then
  redis.call('SET', KEYS[5], '{')
  redis.call('APPEND', KEYS[5], ARGV[2])
  redis.call('SADD', KEYS[6], ARGV[4])
  return { 'prepared', 0 }
end
return { 'refused', state or '' }
