-- set_like.lua: one visitor likes or unlikes one comment, atomically.
--
-- In one step it checks that the comment exists, adds the visitor to (or
-- removes them from) the comment's liker set and the comment to (or from) the
-- visitor's liked set, sets the ranking score to the size of the liker set
-- and, only when something changed, hands out the next event id and appends a
-- `like` or `unlike` event to the stream, trimmed exactly to the newest
-- ARGV[4] entries (MAXLEN N, not MAXLEN ~ N), and publishes it for every
-- instance's pump. Liking twice changes nothing the second time, so a retry is
-- harmless. All KEYS are one board's (T is its hash tag): one cluster slot.
--
-- KEYS[1]  T:comments          hash: member -> comment JSON (existence check)
-- KEYS[2]  T:ranking           zset: member scored by its number of likes
-- KEYS[3]  T:likers:<member>   set: visitors who like this comment
-- KEYS[4]  T:liked:<visitor>   set: members of this board this visitor likes
-- KEYS[5]  T:event_seq         string: last event id handed out
-- KEYS[6]  T:events            stream: the newest events, ids 0-<event id>
-- ARGV[1]  member: the comment id zero-padded to 12 digits
-- ARGV[2]  visitor id
-- ARGV[3]  'like' or 'unlike'
-- ARGV[4]  how many events the stream keeps (--stream-len)
-- ARGV[5]  the pub/sub channel of new events, {P}:feed (not a key)
-- ARGV[6]  the board's name
--
-- Returns {exists, changed, score}: exists and changed are 0 or 1; score is the
-- comment's number of likes afterwards. {0, 0, 0} when the comment does not
-- exist, and then nothing was written.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return {0, 0, 0}
end
local changed
if ARGV[3] == 'like' then
  changed = redis.call('SADD', KEYS[3], ARGV[2])
  redis.call('SADD', KEYS[4], ARGV[1])
else
  changed = redis.call('SREM', KEYS[3], ARGV[2])
  redis.call('SREM', KEYS[4], ARGV[1])
end
-- The score is the size of the liker set: it cannot drift or go below 0.
local score = redis.call('SCARD', KEYS[3])
if changed == 1 then
  redis.call('ZADD', KEYS[2], score, ARGV[1])
  local seq = redis.call('INCR', KEYS[5])
  redis.call('XADD', KEYS[6], 'MAXLEN', ARGV[4], '0-' .. seq,
    'type', ARGV[3], 'comment', ARGV[1], 'score', score)
  redis.call('PUBLISH', ARGV[5], cjson.encode({board = ARGV[6], id = seq,
    type = ARGV[3], comment = ARGV[1], score = score}))
end
return {1, changed, score}
