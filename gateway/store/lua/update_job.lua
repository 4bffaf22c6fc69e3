-- Replace the record of a job the tenant owns and that is still retained, unless a final one
-- (the job ended) is stored: a slower, older answer must not turn it back.
-- KEYS[1] job hash; ARGV[1] record, ARGV[2] now, ARGV[3] retention seconds, ARGV[4] final (1/0)
local fields = redis.call('HMGET', KEYS[1], 'created_at', 'final')
local created = fields[1]
if not created or tonumber(created) <= tonumber(ARGV[2]) - tonumber(ARGV[3]) then
  return 0
end
if fields[2] ~= '1' then
  redis.call('HSET', KEYS[1], 'record', ARGV[1], 'final', ARGV[4])
end
return 1
