-- A batch of one tenant's reads, in arrival order: each spends a read (GCRA, the arithmetic of
-- limits.rate_take; a refused read consumes nothing and does nothing else) and, for a status
-- poll, looks the job up (as get_job, with retention) and claims its refresh window (as
-- claim.lua). Items run one after the other, so the answers are those of separate calls.
-- gcra.lua comes first. KEYS[1] read rate (a stored TAT, see limits.py); then a job hash and
-- its refresh claim per status poll
-- ARGV[1] now µs, ARGV[2] now s, ARGV[3] reads per minute (0: unlimited), ARGV[4] retention s,
-- ARGV[5] refresh ttl s, ARGV[6..] per item: the KEYS index of its job hash, 0 for a plain read
-- Returns per item {allowed, remaining, reset µs, retry µs, model, created_at, record, claimed}
local now_us = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local retention = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])

local us, rem = 0, 0
if limit > 0 then us, rem = tat_parts(redis.call('GET', KEYS[1]), limit, now_us) end
local spent = false
local answers = {}

for i = 6, #ARGV do
  local remaining, reset_us = 0, 0
  local refused = false
  if limit > 0 then
    local allowed, next_us, next_rem, left, wait = gcra_take(us, rem, limit, now_us)
    if allowed then
      us, rem, spent = next_us, next_rem, true
      remaining, reset_us = left, wait
    else
      answers[#answers + 1] = {0, 0, wait, wait, false, false, false, 0}
      refused = true
    end
  end
  if not refused then
    local at = tonumber(ARGV[i])
    local job = at > 0 and redis.call('HMGET', KEYS[at], 'model', 'created_at', 'record') or {}
    if not job[1] or not job[2] or not job[3] or tonumber(job[2]) <= now - retention then
      answers[#answers + 1] = {1, remaining, reset_us, 0, false, false, false, 0}
    else
      local claimed = 0
      local expires = redis.call('GET', KEYS[at + 1])
      if not expires or tonumber(expires) <= now then
        redis.call('SET', KEYS[at + 1], now + ttl, 'PX', math.ceil(ttl * 1000))
        claimed = 1
      end
      answers[#answers + 1] = {1, remaining, reset_us, 0, job[1], job[2], job[3], claimed}
    end
  end
end

if spent then
  redis.call('SET', KEYS[1], stored_tat(us, rem), 'PX', math.ceil((us - now_us) / 1000) + RATE_KEY_MARGIN_MS)
end
return answers
