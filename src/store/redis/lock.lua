-- lock.lua: lock or unlock a board, and log a `locked` event, atomically.
--
-- While T:locked exists, add_comment.lua and set_like.lua refuse to write
-- (they check it in their own atomic step, so no comment or like lands after
-- the lock's event). A board that has never had a comment cannot be locked,
-- except the default board, which always exists. All KEYS are one board's
-- (T is its hash tag): one cluster slot.
--
-- KEYS[1]  T:locked       string: '1' while the board is locked
-- KEYS[2]  T:comment_seq  string: last comment id (exists once the board does)
-- KEYS[3]  T:event_seq    string: last event id handed out
-- KEYS[4]  T:events       stream: the newest events, ids 0-<event id>
-- ARGV[1]  '1' to lock, '0' to unlock
-- ARGV[2]  '1' for the default board (which always exists)
-- ARGV[3]  how many events the stream keeps (--stream-len)
-- ARGV[4]  the pub/sub channel of new events, {P}:feed (not a key)
-- ARGV[5]  the board's name
--
-- Returns 1 when done, 0 when there is no such board, 2 when the board is
-- already as asked (for 0 and 2 nothing was written).
if ARGV[2] ~= '1' and redis.call('EXISTS', KEYS[2]) == 0 then
  return 0
end
local locked = redis.call('EXISTS', KEYS[1]) == 1
if locked == (ARGV[1] == '1') then
  return 2
end
if ARGV[1] == '1' then
  redis.call('SET', KEYS[1], '1')
else
  redis.call('DEL', KEYS[1])
end
local seq = redis.call('INCR', KEYS[3])
redis.call('XADD', KEYS[4], 'MAXLEN', ARGV[3], '0-' .. seq,
  'type', 'locked', 'locked', ARGV[1])
redis.call('PUBLISH', ARGV[4], cjson.encode({board = ARGV[5], id = seq,
  type = 'locked', locked = ARGV[1]}))
return 1
