-- A batch of one tenant's reads, in arrival order: each spends a read (GCRA, the arithmetic of
-- limits.rate_take; a refused read consumes nothing and does nothing else) and, for a status
-- poll, looks the job up (as get_job, with retention) and claims its refresh window (as
-- claim.lua). Items run one after the other, so the answers are those of separate calls.
-- KEYS[1] read rate (a stored TAT, see limits.py); then a job hash and its refresh claim per
-- status poll
-- ARGV[1] now µs, ARGV[2] now s, ARGV[3] reads per minute (0: unlimited), ARGV[4] retention s,
-- ARGV[5] refresh ttl s, ARGV[6..] per item: the KEYS index of its job hash, 0 for a plain read
-- Returns per item {allowed, remaining, reset µs, retry µs, model, created_at, record, claimed}
local WINDOW = 60000000
local now_us = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local retention = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])

-- A stored TAT as whole µs and a remainder in 1/limit µs, never earlier than now (limits.py's
-- _tat_parts: negative is this format, non-negative the previous release's plain µs).
local function tat_parts(stored)
  if not stored then return now_us, 0 end
  local us, rem = tonumber(stored), 0
  if string.sub(stored, 1, 1) == '-' then
    us, rem = tonumber(string.sub(stored, 2, -8)), tonumber(string.sub(stored, -7))
  end
  if rem >= limit then us, rem = us + 1, 0 end
  if us < now_us then return now_us, 0 end
  return us, rem
end

-- Every number below stays under 2^53, so it is exact, and so are floor and ceil of the
-- quotients taken (their fractional parts, when not 0, are far above a double's rounding).
local us, rem, step_us, step_rem = 0, 0, 0, 0
if limit > 0 then
  us, rem = tat_parts(redis.call('GET', KEYS[1]))
  step_us, step_rem = math.floor(WINDOW / limit), WINDOW % limit
end
local spent = false
local answers = {}

for i = 6, #ARGV do
  local remaining, reset_us = 0, 0
  local refused = false
  if limit > 0 then
    local next_us, next_rem = us + step_us, rem + step_rem
    if next_rem >= limit then next_us, next_rem = next_us + 1, next_rem - limit end
    local ahead = next_us - now_us
    if ahead > WINDOW or (ahead == WINDOW and next_rem > 0) then
      local wait = ahead - WINDOW + (next_rem > 0 and 1 or 0)
      answers[#answers + 1] = {0, 0, wait, wait, false, false, false, 0}
      refused = true
    else
      us, rem, spent = next_us, next_rem, true
      local backlog = ahead * limit + next_rem
      remaining = math.floor((WINDOW * limit - backlog) / WINDOW)
      if remaining == 0 then
        reset_us = math.ceil((backlog + WINDOW - WINDOW * limit) / limit)
      end
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
  redis.call('SET', KEYS[1], string.format('-%d%07d', us, rem), 'PX',
    math.ceil((us - now_us) / 1000) + 1)
end
return answers
