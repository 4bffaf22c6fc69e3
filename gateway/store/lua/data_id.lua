-- The id of the data Redis holds; ARGV[1] becomes it when there is none (first use, data lost).
-- KEYS[1] data id key (no expiry); ARGV[1] candidate id
local current = redis.call('GET', KEYS[1])
if current then
  return current
end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
