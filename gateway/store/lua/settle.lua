-- Settle a charged job exactly once: free its slot, and refund its cost if asked.
-- An expired job (still running past its deadline) is refunded but stays open to one more
-- settlement: if it succeeds after all it is charged again (the upstream bills it).
-- KEYS[1] job hash, KEYS[2] slots, KEYS[3] day budget, KEYS[4] month budget
-- ARGV[1] 'charge', 'refund' or 'expire', ARGV[2] now, ARGV[3] retention seconds
-- Returns false (nothing to settle) or {cost, refunded, charged again late (1/0)}.
local fields = redis.call('HMGET', KEYS[1], 'token', 'cost', 'settled', 'created_at')
local token, cost, settled, created = fields[1], fields[2], fields[3], fields[4]
local mode = ARGV[1]
if not token or tonumber(created) <= tonumber(ARGV[2]) - tonumber(ARGV[3]) then
  return false
end
local function add_to_budgets(amount)
  for i = 3, 4 do
    local used = redis.call('GET', KEYS[i])
    if used then
      redis.call('SET', KEYS[i], math.max(0, tonumber(used) + amount), 'KEEPTTL')
    end
  end
end
if settled == 'expired' and mode ~= 'expire' then
  redis.call('HSET', KEYS[1], 'settled', '1')
  if mode == 'refund' then return false end  -- failed or cancelled: refunded already
  add_to_budgets(tonumber(cost))
  return {tonumber(cost), 0, 1}
end
if settled ~= '0' then
  return false
end
redis.call('HSET', KEYS[1], 'settled', mode == 'expire' and 'expired' or '1')
redis.call('ZREM', KEYS[2], token)
local refunded = 0
if mode ~= 'charge' then
  refunded = tonumber(cost)
  add_to_budgets(-refunded)
end
return {tonumber(cost), refunded, 0}
