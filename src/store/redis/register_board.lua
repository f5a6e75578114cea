-- register_board.lua: enter a board in the list of boards before its first
-- comment, unless the list is full, atomically (two instances making the last
-- board the list has room for cannot both succeed).
--
-- The list lives in the site's own slot, not the board's, so this runs as its
-- own step before add_comment.lua; the comment count is raised after it
-- (ZINCRBY). A board entered whose comment then failed stays listed with the
-- count it had: it costs one place in the list, never a lost comment.
--
-- The default board is never refused (it always exists), and its keys share
-- the site's slot, so it is entered with the comments it already holds: a
-- Redis written before boards existed is listed right from the start.
--
-- KEYS[1]  {P}:boards     zset: board -> number of comments
-- KEYS[2]  (main only) {P}:comments, the default board's comment hash
-- ARGV[1]  the board's name
-- ARGV[2]  the most boards there may be (--max-boards)
-- ARGV[3]  '1' to list the default board only if it holds comments already
--          (taking in an older Redis, before anyone comments)
--
-- Returns 1 if the board is listed (now or already), 0 if the list is full,
-- 2 if the default board was not listed because it holds nothing yet.
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 1
end
if KEYS[2] then
  local held = redis.call('HLEN', KEYS[2])
  if ARGV[3] == '1' and held == 0 then
    return 2
  end
  redis.call('ZADD', KEYS[1], held, ARGV[1])
  return 1
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], 0, ARGV[1])
return 1
