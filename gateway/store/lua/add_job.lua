-- Record a job for a tenant, keeping the original created_at when the id is already owned,
-- attach a reservation's charge to it (once) and store the record as an Idempotency-Key's answer
-- (unless the key has an answer already, or another submit claimed it: a job written back after
-- an outage must not take what another submit with the key got or holds meanwhile).
-- KEYS[1] job hash, KEYS[2] tenant index, KEYS[3] tenant+model index, KEYS[4] slots,
-- KEYS[5] the key's claim hash (absent: no key)
-- ARGV[1] request id, ARGV[2] model, ARGV[3] record, ARGV[4] now, ARGV[5] retention seconds,
-- ARGV[6] slot token ('' for no charge), ARGV[7] cost, ARGV[8] day, ARGV[9] month,
-- ARGV[10] deadline (when the slot is released at the latest), ARGV[11] fingerprint,
-- ARGV[12] how long the answer is kept (s), ARGV[13] the answer, ARGV[14] the token of the
-- reservation that claimed the key (another submit's claim, or an answer, stays)
-- A job is gone once created_at <= now - retention: the same expression as every other script,
-- the memory backend and ZREMRANGEBYSCORE's cutoff, so lookups and the index always agree.
local now = tonumber(ARGV[4])
local retention = tonumber(ARGV[5])
local cutoff = now - retention
local created = redis.call('HGET', KEYS[1], 'created_at')
if created and tonumber(created) <= cutoff then
  redis.call('DEL', KEYS[1])
  created = false
end
if created then
  if redis.call('HGET', KEYS[1], 'final') ~= '1' then  -- a job's last record stays
    redis.call('HSET', KEYS[1], 'record', ARGV[3])
  end
else
  created = ARGV[4]
  redis.call('HSET', KEYS[1], 'model', ARGV[2], 'created_at', created, 'record', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(retention * 1000))
  redis.call('ZADD', KEYS[2], created, ARGV[1])
  redis.call('ZADD', KEYS[3], created, ARGV[1])
  -- Every entry is gone a retention after the newest: so is the index of a tenant (or a
  -- model) that stopped submitting.
  redis.call('PEXPIRE', KEYS[2], math.ceil(retention * 1000))
  redis.call('PEXPIRE', KEYS[3], math.ceil(retention * 1000))
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cutoff)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', cutoff)
local charged = 0
if ARGV[6] ~= '' and redis.call('HEXISTS', KEYS[1], 'token') == 0 then
  redis.call('HSET', KEYS[1], 'token', ARGV[6], 'cost', ARGV[7], 'day', ARGV[8],
    'month', ARGV[9], 'settled', '0')
  if ARGV[10] ~= '' then
    redis.call('ZADD', KEYS[4], ARGV[10], ARGV[6])
    local slots_ms = math.ceil((tonumber(ARGV[10]) - now) * 1000) + 86400000  -- begin_submit.lua
    if redis.call('PTTL', KEYS[4]) < slots_ms then redis.call('PEXPIRE', KEYS[4], slots_ms) end
  end
  charged = 1
end
local held = KEYS[5] and redis.call('HMGET', KEYS[5], 'body', 'token', 'expires_at')
local live = held and held[3] and tonumber(held[3]) > now
if held and (not live or (not held[1] and (not held[2] or held[2] == ARGV[14]))) then
  local ttl = tonumber(ARGV[12])
  redis.call('HSET', KEYS[5], 'fingerprint', ARGV[11], 'expires_at', now + ttl, 'status', 200,
    'body', ARGV[13])
  redis.call('PEXPIRE', KEYS[5], math.ceil(ttl * 1000))
end
return {created, charged, redis.call('HGET', KEYS[1], 'model')}
