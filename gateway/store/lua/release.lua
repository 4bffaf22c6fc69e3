-- Undo a reservation once: free its slot and give its cost back to both budgets.
-- KEYS[1] slots, KEYS[2] day budget, KEYS[3] month budget; ARGV[1] token, ARGV[2] cost.
-- With KEYS[4] (the token's void marker) and ARGV[3] (its ttl, s), also void the token: a
-- begin_submit.lua of it that reaches Redis later (its caller gave up on the reply) reserves
-- nothing.
if KEYS[4] then
  redis.call('SET', KEYS[4], '1', 'EX', ARGV[3])
end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
for i = 2, 3 do
  local used = redis.call('GET', KEYS[i])
  if used then
    redis.call('SET', KEYS[i], math.max(0, tonumber(used) - tonumber(ARGV[2])), 'KEEPTTL')
  end
end
return 1
