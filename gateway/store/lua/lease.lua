-- Take or renew a lease unless another holder's lease is unexpired.
-- KEYS[1] lease hash; ARGV[1] holder, ARGV[2] now s, ARGV[3] ttl s
local fields = redis.call('HMGET', KEYS[1], 'holder', 'expires_at')
if fields[1] and fields[1] ~= ARGV[1] and tonumber(fields[2]) > tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'expires_at', tonumber(ARGV[2]) + tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) * 1000))
return 1
