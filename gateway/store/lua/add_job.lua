-- Record a job for a tenant, keeping the original created_at when the id is already owned.
-- KEYS[1] job hash, KEYS[2] tenant index, KEYS[3] tenant+model index
-- ARGV[1] request id, ARGV[2] model, ARGV[3] record, ARGV[4] now, ARGV[5] retention seconds
local now = tonumber(ARGV[4])
local retention = tonumber(ARGV[5])
local created = redis.call('HGET', KEYS[1], 'created_at')
if created and tonumber(created) + retention <= now then
  redis.call('DEL', KEYS[1])
  created = false
end
if created then
  redis.call('HSET', KEYS[1], 'record', ARGV[3])
else
  created = ARGV[4]
  redis.call('HSET', KEYS[1], 'model', ARGV[2], 'created_at', created, 'record', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(retention * 1000))
  redis.call('ZADD', KEYS[2], created, ARGV[1])
  redis.call('ZADD', KEYS[3], created, ARGV[1])
end
local cutoff = now - retention
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cutoff)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', cutoff)
return created
