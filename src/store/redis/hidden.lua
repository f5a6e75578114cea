-- hidden.lua: a board's hidden comments, most recently hidden first, read
-- atomically. Writes nothing. All KEYS are one board's (T is its hash tag).
--
-- KEYS[1]  T:comments     hash: member -> {"nickname","content","created_at"}
-- KEYS[2]  T:hidden       zset: hidden member scored by its number of likes
-- KEYS[3]  T:hidden_at    zset: hidden member scored by when it was hidden
-- ARGV[1]  how many at most
--
-- Returns a flat array, four values per comment: member, comment JSON ('' if
-- missing), score, and when it was hidden (ms).
local out = {}
if tonumber(ARGV[1]) < 1 then
  return out
end
local rows = redis.call('ZREVRANGE', KEYS[3], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
for i = 1, #rows, 2 do
  local m = rows[i]
  out[#out + 1] = m
  out[#out + 1] = redis.call('HGET', KEYS[1], m) or ''
  out[#out + 1] = redis.call('ZSCORE', KEYS[2], m) or '0'
  out[#out + 1] = rows[i + 1]
end
return out
