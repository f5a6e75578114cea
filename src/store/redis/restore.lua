-- restore.lua: put a hidden comment back on the board, and log a `comment`
-- event carrying it with its score, atomically.
--
-- The member moves from the hidden set back to the ranking with the score it
-- left with (its likers were kept, and no like could change them meanwhile),
-- so it lands where its score ranks it. The event is the same shape as a new
-- comment's (add_comment.lua), with the score: a page inserts it in its place.
-- All KEYS are one board's (T is its hash tag): one cluster slot.
--
-- KEYS[1]  T:comments     hash: member -> {"nickname","content","created_at"}
-- KEYS[2]  T:ranking      zset: member scored by its number of likes
-- KEYS[3]  T:hidden       zset: hidden member scored by its number of likes
-- KEYS[4]  T:hidden_at    zset: hidden member scored by when it was hidden
-- KEYS[5]  T:event_seq    string: last event id handed out
-- KEYS[6]  T:events       stream: the newest events, ids 0-<event id>
-- ARGV[1]  the member to restore
-- ARGV[2]  how many events the stream keeps (--stream-len)
-- ARGV[3]  the pub/sub channel of new events, {P}:feed (not a key)
-- ARGV[4]  the board's name
--
-- Returns 1 when restored, 0 when the comment does not exist, 2 when it is
-- not hidden (for 0 and 2 nothing was written).
local json = redis.call('HGET', KEYS[1], ARGV[1])
if not json then
  return 0
end
local score = redis.call('ZSCORE', KEYS[3], ARGV[1])
if not score then
  return 2
end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZADD', KEYS[2], score, ARGV[1])
local c = cjson.decode(json)
local seq = redis.call('INCR', KEYS[5])
redis.call('XADD', KEYS[6], 'MAXLEN', ARGV[2], '0-' .. seq,
  'type', 'comment', 'comment', ARGV[1], 'score', score,
  'nickname', c.nickname, 'content', c.content, 'created_at', c.created_at)
redis.call('PUBLISH', ARGV[3], cjson.encode({board = ARGV[4], id = seq,
  type = 'comment', comment = ARGV[1], score = tonumber(score),
  nickname = c.nickname, content = c.content, created_at = c.created_at}))
return 1
