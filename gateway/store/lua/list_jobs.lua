-- Drop expired entries from an index, then return its size and one page, newest first.
-- KEYS[1] index; ARGV[1] now, ARGV[2] retention seconds, ARGV[3] offset, ARGV[4] limit
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
local total = redis.call('ZCARD', KEYS[1])
local first = tonumber(ARGV[3])
local ids = redis.call('ZREVRANGE', KEYS[1], first, first + tonumber(ARGV[4]) - 1)
return {total, ids}
