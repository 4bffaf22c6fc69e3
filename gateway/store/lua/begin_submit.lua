-- Claim the Idempotency-Key, if any; unless it is taken, check every submit limit and, only if
-- all pass, consume them all and claim the key (gateway/store/limits.py holds the same
-- arithmetic; decide_submit re-derives the decision from what this returns).
-- gcra.lua comes first. KEYS[1] submit rate (a stored TAT, see limits.py), KEYS[2] slots,
-- KEYS[3] day budget, KEYS[4] month budget, KEYS[5] the token's void marker (release.lua),
-- KEYS[6] the key's claim hash (absent: no key)
-- ARGV[1] now µs, ARGV[2] now s, ARGV[3] token, ARGV[4] cost, ARGV[5] rate limit (0: none),
-- ARGV[6] concurrency limit, ARGV[7] day limit, ARGV[8] month limit, ARGV[9] hold until s,
-- ARGV[10] day ends s, ARGV[11] month ends s, ARGV[12] fingerprint, ARGV[13] claim ttl s
-- Returns {'void'} for a token given up on before this ran (it reserves nothing), {outcome}
-- or {'done', status, body} for a key that is taken, else
-- {outcome ('new', or '' without a key), violated, remaining, reset µs, retry µs, stored TAT,
-- slots in use, day used, month used}.
if redis.call('EXISTS', KEYS[5]) == 1 then return {'void'} end
local now_us = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local claim = KEYS[6]
if claim then
  local fields = redis.call('HMGET', claim, 'fingerprint', 'expires_at', 'status', 'body')
  if fields[1] and tonumber(fields[2]) > now then
    if fields[1] ~= ARGV[12] then return {'mismatch'} end
    if not fields[4] then return {'pending'} end
    return {'done', fields[3], fields[4]}
  end
end
local cost = tonumber(ARGV[4])
local rate_limit = tonumber(ARGV[5])
local violated = false
local new_us = 0

local stored, remaining, reset_us, retry_us = '0', 0, 0, 0
if rate_limit > 0 then
  local us, rem = tat_parts(redis.call('GET', KEYS[1]), rate_limit, now_us)
  local allowed, next_us, next_rem, left, wait = gcra_take(us, rem, rate_limit, now_us)
  if allowed then
    remaining, reset_us = left, wait
    stored, new_us = stored_tat(next_us, next_rem), next_us
  else
    violated = true
    retry_us, reset_us = wait, wait
    stored = stored_tat(us, rem)
  end
end

-- Read-only until every limit passed: the first write must be one Redis refuses at maxmemory
-- (SET, INCRBY), or the whole reservation would get through and only recording the job, after
-- the upstream took it, would fail. Expired slots are pruned once the budgets are charged.
local in_use = redis.call('ZCOUNT', KEYS[2], '(' .. ARGV[2], '+inf')
local conc_limit = tonumber(ARGV[6])
if conc_limit > 0 and in_use >= conc_limit then violated = true end

local day_used = tonumber(redis.call('GET', KEYS[3]) or '0')
local month_used = tonumber(redis.call('GET', KEYS[4]) or '0')
local day_limit = tonumber(ARGV[7])
local month_limit = tonumber(ARGV[8])
if day_limit > 0 and day_used + cost > day_limit then violated = true end
if month_limit > 0 and month_used + cost > month_limit then violated = true end

if not violated then
  if rate_limit > 0 then
    redis.call('SET', KEYS[1], stored, 'PX', math.ceil((new_us - now_us) / 1000) + RATE_KEY_MARGIN_MS)
  end
  local margin = 2 * 86400 * 1000
  redis.call('INCRBY', KEYS[3], cost)
  redis.call('PEXPIRE', KEYS[3], math.ceil((tonumber(ARGV[10]) - now) * 1000) + margin)
  redis.call('INCRBY', KEYS[4], cost)
  redis.call('PEXPIRE', KEYS[4], math.ceil((tonumber(ARGV[11]) - now) * 1000) + margin)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  redis.call('ZADD', KEYS[2], ARGV[9], ARGV[3])
  -- The set lives as long as its latest entry, and a day more for clock skew between replicas:
  -- a tenant that stops submitting leaves nothing behind.
  local slots_ms = math.ceil((tonumber(ARGV[9]) - now) * 1000) + 86400000
  if redis.call('PTTL', KEYS[2]) < slots_ms then redis.call('PEXPIRE', KEYS[2], slots_ms) end
  if claim then
    local ttl = tonumber(ARGV[13])
    redis.call('DEL', claim)
    redis.call('HSET', claim, 'fingerprint', ARGV[12], 'expires_at', now + ttl, 'token', ARGV[3])
    redis.call('PEXPIRE', claim, math.ceil(ttl * 1000))
  end
end
return {claim and 'new' or '', violated and 1 or 0, remaining, reset_us, retry_us, stored, in_use,
  day_used, month_used}
