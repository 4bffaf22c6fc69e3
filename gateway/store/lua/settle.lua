-- Settle a charged job exactly once: free its slot, and refund its cost if asked.
-- KEYS[1] job hash, KEYS[2] slots, KEYS[3] day budget, KEYS[4] month budget
-- ARGV[1] refund (1/0), ARGV[2] now, ARGV[3] retention seconds
local fields = redis.call('HMGET', KEYS[1], 'token', 'cost', 'settled', 'created_at')
local token, cost, settled, created = fields[1], fields[2], fields[3], fields[4]
if not token or settled ~= '0' then
  return false
end
if tonumber(created) <= tonumber(ARGV[2]) - tonumber(ARGV[3]) then
  return false
end
redis.call('HSET', KEYS[1], 'settled', '1')
redis.call('ZREM', KEYS[2], token)
local refunded = 0
if ARGV[1] == '1' then
  refunded = tonumber(cost)
  for i = 3, 4 do
    local used = redis.call('GET', KEYS[i])
    if used then
      redis.call('SET', KEYS[i], math.max(0, tonumber(used) - refunded), 'KEEPTTL')
    end
  end
end
return {tonumber(cost), refunded}
