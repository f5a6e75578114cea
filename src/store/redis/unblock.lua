-- unblock.lua: lift the block named by its ref, atomically.
--
-- KEYS[1]  {P}:blocked       hash: visitor id -> block JSON
-- KEYS[2]  {P}:blocked_refs  hash: ref -> visitor id
-- KEYS[3]  {P}:blocked_seq   string: the blocks' version
-- ARGV[1]  the block's ref
--
-- Returns {visitor id that was blocked, the blocks' new version}, or false
-- (nil) when no block has that ref (then nothing was written).
local visitor = redis.call('HGET', KEYS[2], ARGV[1])
if not visitor then
  return false
end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], visitor)
return {visitor, redis.call('INCR', KEYS[3])}
