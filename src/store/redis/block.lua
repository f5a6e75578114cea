-- block.lua: block a visitor site-wide (or change their block), atomically.
--
-- Expired blocks are pruned first, so they make room; a new block beyond the
-- most there may be (ARGV[6]) is refused. Every change bumps the version,
-- which every instance polls each second to know when to read the blocks
-- again (moderation.rs). The keys are the site's ({P}): another slot than any
-- board's, which is why a block is a step of its own.
--
-- KEYS[1]  {P}:blocked       hash: visitor id -> block JSON {"ref","until","at","board","comment"}
-- KEYS[2]  {P}:blocked_refs  hash: ref -> visitor id
-- KEYS[3]  {P}:blocked_seq   string: the blocks' version
-- ARGV[1]  the visitor id
-- ARGV[2]  the block's ref
-- ARGV[3]  the block, JSON
-- ARGV[4]  now, milliseconds since the Unix epoch
-- ARGV[5]  the most blocks there may be (store::MAX_BLOCKS)
--
-- Returns the blocks' new version (1 or more) when the block is in place, 0
-- when there are too many (then nothing was written but the pruning).
local now = tonumber(ARGV[4])
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local b = cjson.decode(all[i + 1])
  local ends = b['until']
  if type(ends) == 'number' and ends <= now then
    redis.call('HDEL', KEYS[1], all[i])
    redis.call('HDEL', KEYS[2], b['ref'])
  end
end
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  redis.call('HDEL', KEYS[2], cjson.decode(old)['ref'])
elseif redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[5]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
return redis.call('INCR', KEYS[3])
