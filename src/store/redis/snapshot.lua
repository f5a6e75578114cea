-- snapshot.lua: one page of the ranking for one visitor, with the newest event
-- id, read atomically.
--
-- Reading the page and the event counter in one step makes them agree: every
-- event up to the returned id is reflected in the page, none after it, so a
-- browser can open its stream after exactly that id and miss nothing. It
-- writes nothing. All KEYS are one board's (T is its hash tag).
--
-- KEYS[1]  T:comments          hash: member -> {"nickname","content","created_at"}
-- KEYS[2]  T:ranking           zset: member scored by its number of likes
-- KEYS[3]  T:liked:<visitor>   set: members this visitor likes
-- KEYS[4]  T:event_seq         string: last event id handed out
-- ARGV[1]  offset into the ranking (score desc, then newest first)
-- ARGV[2]  how many comments at most
--
-- Returns a flat array: the last event id ('0' before any event), then four
-- values per comment: member, comment JSON ('' if missing), score, and 1 or 0
-- for whether this visitor likes it.
local members = redis.call('ZREVRANGEBYSCORE', KEYS[2], '+inf', '-inf',
  'LIMIT', ARGV[1], ARGV[2])
local out = {redis.call('GET', KEYS[4]) or '0'}
for _, m in ipairs(members) do
  out[#out + 1] = m
  out[#out + 1] = redis.call('HGET', KEYS[1], m) or ''
  out[#out + 1] = redis.call('ZSCORE', KEYS[2], m)
  out[#out + 1] = redis.call('SISMEMBER', KEYS[3], m)
end
return out
