-- Undo a reservation once: free its slot and give its cost back to both budgets.
-- KEYS[1] slots, KEYS[2] day budget, KEYS[3] month budget; ARGV[1] token, ARGV[2] cost.
-- For a submit given up on (its reply lost), also KEYS[4] the token's void marker, ARGV[3]
-- its ttl s: void the token, so a begin_submit.lua of it that reaches Redis later reserves
-- nothing; and KEYS[5], the claim of the submit's Idempotency-Key if it had one: free it if
-- this token claimed it and it has no answer (a retry with the key may proceed).
if KEYS[4] then
  redis.call('SET', KEYS[4], '1', 'EX', ARGV[3])
end
if KEYS[5] then
  local claim = redis.call('HMGET', KEYS[5], 'token', 'body')
  if claim[1] == ARGV[1] and not claim[2] then redis.call('DEL', KEYS[5]) end
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
