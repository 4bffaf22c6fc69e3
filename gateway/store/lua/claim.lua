-- One claim per window: succeed unless an unexpired claim exists.
-- KEYS[1] claim; ARGV[1] now s, ARGV[2] ttl s
local expires = redis.call('GET', KEYS[1])
if expires and tonumber(expires) > tonumber(ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), 'PX',
  math.ceil(tonumber(ARGV[2]) * 1000))
return 1
