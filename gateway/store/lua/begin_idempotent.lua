-- Claim an idempotency key for a request fingerprint, or report where it stands.
-- KEYS[1] claim hash; ARGV[1] fingerprint, ARGV[2] now s, ARGV[3] ttl s
local fields = redis.call('HMGET', KEYS[1], 'fingerprint', 'expires_at', 'status', 'body')
if not fields[1] or tonumber(fields[2]) <= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1],
    'expires_at', tonumber(ARGV[2]) + tonumber(ARGV[3]))
  redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) * 1000))
  return {'new'}
end
if fields[1] ~= ARGV[1] then
  return {'mismatch'}
end
if not fields[4] then
  return {'pending'}
end
return {'done', fields[3], fields[4]}
