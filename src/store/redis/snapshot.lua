-- snapshot.lua: one page of the ranking for one visitor, with the newest event
-- id and whether the board is locked, read atomically.
--
-- Reading the page and the event counter in one step makes them agree: every
-- event up to the returned id is reflected in the page, none after it, so a
-- browser can open its stream after exactly that id and miss nothing. It
-- writes nothing. Hidden comments are not in the ranking, so never listed.
-- All KEYS are one board's (T is its hash tag).
--
-- KEYS[1]  T:comments          hash: member -> {"nickname","content","created_at"}
-- KEYS[2]  T:ranking           zset: member scored by its number of likes
-- KEYS[3]  T:liked:<visitor>   set: members this visitor likes
-- KEYS[4]  T:event_seq         string: last event id handed out
-- KEYS[5]  T:locked            string: '1' while the board is locked
-- ARGV[1]  offset into the ranking (score desc, then newest first)
-- ARGV[2]  how many comments at most
--
-- Returns a flat array: the last event id ('0' before any event), 1 or 0 for
-- whether the board is locked, then four values per comment: member, comment
-- JSON ('' if missing), score, and 1 or 0 for whether this visitor likes it.
-- Three calls for the whole page, not three per comment: the page's members
-- with their scores, their comments in one HMGET, and which this visitor
-- likes in one SMISMEMBER (Redis 6.2 or later).
local ranked = redis.call('ZREVRANGEBYSCORE', KEYS[2], '+inf', '-inf',
  'WITHSCORES', 'LIMIT', ARGV[1], ARGV[2])
local out = {redis.call('GET', KEYS[4]) or '0', redis.call('EXISTS', KEYS[5])}
if #ranked == 0 then
  return out
end
local members = {}
for i = 1, #ranked, 2 do
  members[#members + 1] = ranked[i]
end
-- In slices: Lua's unpack takes at most a few thousand values.
local comments, liked = {}, {}
for first = 1, #members, 1000 do
  local slice = {unpack(members, first, math.min(first + 999, #members))}
  for _, c in ipairs(redis.call('HMGET', KEYS[1], unpack(slice))) do
    comments[#comments + 1] = c
  end
  for _, l in ipairs(redis.call('SMISMEMBER', KEYS[3], unpack(slice))) do
    liked[#liked + 1] = l
  end
end
for i, m in ipairs(members) do
  out[#out + 1] = m
  out[#out + 1] = comments[i] or ''
  out[#out + 1] = ranked[2 * i]
  out[#out + 1] = liked[i]
end
return out
