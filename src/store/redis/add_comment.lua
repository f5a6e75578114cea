-- add_comment.lua: post one comment and log its `comment` event, atomically.
--
-- In one step it hands out the next comment id, stores the comment in the
-- hash, enters it in the ranking with score 0, hands out the next event id and
-- appends the event to the stream, trimmed exactly to the newest ARGV[4]
-- entries (MAXLEN N, not MAXLEN ~ N), and publishes it for every instance's
-- pump. No reader can see the comment without its event, or the event without
-- the comment. All KEYS are one board's (T is its hash tag): one cluster slot.
--
-- KEYS[1]  T:comments     hash: member -> {"nickname","content","created_at"}
-- KEYS[2]  T:ranking      zset: member scored by its number of likes
-- KEYS[3]  T:comment_seq  string: last comment id handed out
-- KEYS[4]  T:event_seq    string: last event id handed out
-- KEYS[5]  T:events       stream: the newest events, ids 0-<event id>
-- ARGV[1]  nickname
-- ARGV[2]  content
-- ARGV[3]  created_at, milliseconds since the Unix epoch
-- ARGV[4]  how many events the stream keeps (--stream-len)
-- ARGV[5]  the pub/sub channel of new events, {P}:feed (not a key)
-- ARGV[6]  the board's name
--
-- Returns the new comment id (an integer). Its member is that id zero-padded
-- to 12 digits, so equal scores sort newest first in ZREVRANGEBYSCORE.
local id = redis.call('INCR', KEYS[3])
local member = string.format('%012d', id)
redis.call('HSET', KEYS[1], member,
  cjson.encode({nickname = ARGV[1], content = ARGV[2], created_at = ARGV[3]}))
redis.call('ZADD', KEYS[2], 0, member)
local seq = redis.call('INCR', KEYS[4])
redis.call('XADD', KEYS[5], 'MAXLEN', ARGV[4], '0-' .. seq,
  'type', 'comment', 'comment', member, 'score', 0,
  'nickname', ARGV[1], 'content', ARGV[2], 'created_at', ARGV[3])
redis.call('PUBLISH', ARGV[5], cjson.encode({board = ARGV[6], id = seq,
  type = 'comment', comment = member, score = 0,
  nickname = ARGV[1], content = ARGV[2], created_at = ARGV[3]}))
return id
