-- set_like.lua: one visitor likes or unlikes one comment, atomically.
--
-- In one step it checks that the board is not locked and that the comment is
-- on the board (in the ranking: a hidden or deleted comment is not), adds the
-- visitor to (or removes them from) the comment's liker set and the comment
-- to (or from) the visitor's liked set, sets the ranking score to the size of
-- the liker set and, only when something changed, hands out the next event id
-- and appends a `like` or `unlike` event to the stream, trimmed exactly to the
-- newest ARGV[4] entries (MAXLEN N, not MAXLEN ~ N), and publishes it for
-- every instance's pump. Liking twice changes nothing the second time, so a
-- retry is harmless. All KEYS are one board's (T is its hash tag): one
-- cluster slot.
--
-- KEYS[1]  T:ranking           zset: member scored by its number of likes
-- KEYS[2]  T:likers:<member>   set: visitors who like this comment
-- KEYS[3]  T:liked:<visitor>   set: members of this board this visitor likes
-- KEYS[4]  T:event_seq         string: last event id handed out
-- KEYS[5]  T:events            stream: the newest events, ids 0-<event id>
-- KEYS[6]  T:locked            string: '1' while the board is locked
-- ARGV[1]  member: the comment id zero-padded to 12 digits
-- ARGV[2]  visitor id
-- ARGV[3]  'like' or 'unlike'
-- ARGV[4]  how many events the stream keeps (--stream-len)
-- ARGV[5]  the pub/sub channel of new events, {P}:feed (not a key)
-- ARGV[6]  the board's name
--
-- Returns {status, changed, score}: status 1 when done, 0 when the comment is
-- not on the board, 2 when the board is locked (for 0 and 2 nothing was
-- written); changed is 0 or 1; score is the comment's number of likes
-- afterwards.
if redis.call('EXISTS', KEYS[6]) == 1 then
  return {2, 0, 0}
end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return {0, 0, 0}
end
local changed
if ARGV[3] == 'like' then
  changed = redis.call('SADD', KEYS[2], ARGV[2])
  redis.call('SADD', KEYS[3], ARGV[1])
else
  changed = redis.call('SREM', KEYS[2], ARGV[2])
  redis.call('SREM', KEYS[3], ARGV[1])
end
-- The score is the size of the liker set: it cannot drift or go below 0.
local score = redis.call('SCARD', KEYS[2])
if changed == 1 then
  redis.call('ZADD', KEYS[1], score, ARGV[1])
  local seq = redis.call('INCR', KEYS[4])
  redis.call('XADD', KEYS[5], 'MAXLEN', ARGV[4], '0-' .. seq,
    'type', ARGV[3], 'comment', ARGV[1], 'score', score)
  redis.call('PUBLISH', ARGV[5], cjson.encode({board = ARGV[6], id = seq,
    type = ARGV[3], comment = ARGV[1], score = score}))
end
return {1, changed, score}
