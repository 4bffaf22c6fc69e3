-- One page of an index in one round trip: drop expired entries, then return the index size and
-- the page's jobs, newest first (ZREVRANGE orders equal scores by larger member first).
-- KEYS[1] index (the tenant's, or the tenant's for one model)
-- ARGV[1] now, ARGV[2] retention seconds, ARGV[3] offset, ARGV[4] limit,
-- ARGV[5] the tenant's job key prefix ('<prefix>:{<tenant>}:job:')
-- The job hashes are named here from ARGV[5], not passed in KEYS, because their ids are only
-- known once the page is read; they carry KEYS[1]'s hash tag, so they live in its cluster slot.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
local first = tonumber(ARGV[3])
local ids = redis.call('ZREVRANGE', KEYS[1], first, first + tonumber(ARGV[4]) - 1)
local jobs = {}
for _, id in ipairs(ids) do
  local job = redis.call('HMGET', ARGV[5] .. id, 'model', 'created_at', 'record')
  if job[1] and job[2] and job[3] then
    jobs[#jobs + 1] = {id, job[1], job[2], job[3]}
  else
    -- The hash is gone (evicted under memory pressure): drop the dangling index entry.
    redis.call('ZREM', KEYS[1], id)
  end
end
return {redis.call('ZCARD', KEYS[1]), jobs}
