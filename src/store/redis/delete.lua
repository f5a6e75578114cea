-- delete.lua: remove one comment for good, hidden or not, with its likes and
-- likers, and log a `remove` event, atomically.
--
-- Gone: the comment's hash entry, its place in the ranking or the hidden set,
-- its author, its liker set, and its member in every liker's liked set and in
-- its author's set of comments. Ids are never handed out again
-- (T:comment_seq only grows), so nothing can inherit what it left.
--
-- The likers' `T:liked:<visitor>` sets and the author's `T:by:<visitor>` set
-- are known only once the script has read the liker set and the author, so
-- they are built here from the board's tag (ARGV[5]) instead of arriving as
-- KEYS. They carry the same hash tag as every key below, so they are in the
-- same cluster slot, which Redis Cluster allows a script to touch; this is
-- the one script that builds key names itself.
--
-- KEYS[1]  T:comments          hash: member -> comment JSON
-- KEYS[2]  T:ranking           zset: member scored by its number of likes
-- KEYS[3]  T:hidden            zset: hidden member scored by its number of likes
-- KEYS[4]  T:hidden_at         zset: hidden member scored by when it was hidden
-- KEYS[5]  T:authors           hash: member -> its author's visitor id
-- KEYS[6]  T:likers:<member>   set: visitors who like this comment
-- KEYS[7]  T:event_seq         string: last event id handed out
-- KEYS[8]  T:events            stream: the newest events, ids 0-<event id>
-- ARGV[1]  the member to delete
-- ARGV[2]  how many events the stream keeps (--stream-len)
-- ARGV[3]  the pub/sub channel of new events, {P}:feed (not a key)
-- ARGV[4]  the board's name
-- ARGV[5]  the board's hash tag T, e.g. {likeboard:post-7}
--
-- Returns 1 when deleted, 0 when the comment does not exist (then nothing
-- was written).
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return 0
end
local author = redis.call('HGET', KEYS[5], ARGV[1])
if author then
  redis.call('SREM', ARGV[5] .. ':by:' .. author, ARGV[1])
end
for _, liker in ipairs(redis.call('SMEMBERS', KEYS[6])) do
  redis.call('SREM', ARGV[5] .. ':liked:' .. liker, ARGV[1])
end
redis.call('DEL', KEYS[6])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
local seq = redis.call('INCR', KEYS[7])
redis.call('XADD', KEYS[8], 'MAXLEN', ARGV[2], '0-' .. seq,
  'type', 'remove', 'comment', ARGV[1])
redis.call('PUBLISH', ARGV[3], cjson.encode({board = ARGV[4], id = seq,
  type = 'remove', comment = ARGV[1]}))
return 1
