-- hide.lua: take one comment off the board, or every comment one author has
-- on it, and log a `remove` event for each, atomically.
--
-- Hiding moves a member from the ranking to the hidden set with its score
-- (its likers stay, and no like can reach it while hidden: set_like.lua
-- checks the ranking), notes when, and appends `remove` to the stream, trimmed
-- exactly to the newest ARGV[3] entries, publishing it for every instance's
-- pump. Every open page drops the comment when the event arrives; a listing
-- never shows it again until restore.lua puts it back. All KEYS are one
-- board's (T is its hash tag): one cluster slot.
--
-- KEYS[1]  T:comments     hash: member -> comment JSON (existence check)
-- KEYS[2]  T:ranking      zset: member scored by its number of likes
-- KEYS[3]  T:hidden       zset: hidden member scored by its number of likes
-- KEYS[4]  T:hidden_at    zset: hidden member scored by when it was hidden
-- KEYS[5]  T:event_seq    string: last event id handed out
-- KEYS[6]  T:events       stream: the newest events, ids 0-<event id>
-- KEYS[7]  (to hide an author's comments) T:by:<author>, the members they wrote
-- ARGV[1]  the member to hide ('' with KEYS[7])
-- ARGV[2]  now, milliseconds since the Unix epoch
-- ARGV[3]  how many events the stream keeps (--stream-len)
-- ARGV[4]  the pub/sub channel of new events, {P}:feed (not a key)
-- ARGV[5]  the board's name
--
-- Returns {status, member...}: status 1 with the members hidden (in id order;
-- for an author, possibly none), 0 when the one member does not exist, 2 when
-- it is hidden already (for 0 and 2 nothing was written).
local function hide(member)
  local score = redis.call('ZSCORE', KEYS[2], member)
  redis.call('ZREM', KEYS[2], member)
  redis.call('ZADD', KEYS[3], score, member)
  redis.call('ZADD', KEYS[4], ARGV[2], member)
  local seq = redis.call('INCR', KEYS[5])
  redis.call('XADD', KEYS[6], 'MAXLEN', ARGV[3], '0-' .. seq,
    'type', 'remove', 'comment', member)
  redis.call('PUBLISH', ARGV[4], cjson.encode({board = ARGV[5], id = seq,
    type = 'remove', comment = member}))
end

if KEYS[7] then
  local members = redis.call('SMEMBERS', KEYS[7])
  -- Zero-padded members sort as their ids do: events in id order.
  table.sort(members)
  local out = {1}
  for _, m in ipairs(members) do
    if redis.call('ZSCORE', KEYS[2], m) then
      hide(m)
      out[#out + 1] = m
    end
  end
  return out
end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return {0}
end
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  return {2}
end
hide(ARGV[1])
return {1, ARGV[1]}
