-- Replace the record of a job the tenant owns and that is still retained.
-- KEYS[1] job hash; ARGV[1] record, ARGV[2] now, ARGV[3] retention seconds
local created = redis.call('HGET', KEYS[1], 'created_at')
if not created or tonumber(created) <= tonumber(ARGV[2]) - tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], 'record', ARGV[1])
return 1
