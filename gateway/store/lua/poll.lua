-- A status poll in one step: spend a read (GCRA, as take_read.lua), look the job up (as
-- get_job, with retention), and claim its refresh window (as claim.lua).
-- KEYS[1] read rate (TAT, µs), KEYS[2] job hash, KEYS[3] refresh claim
-- ARGV[1] now µs, ARGV[2] now s, ARGV[3] reads per minute (0: unlimited),
-- ARGV[4] retention s, ARGV[5] refresh ttl s
local WINDOW = 60000000
local now_us = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local remaining, reset_us = 0, 0
if limit > 0 then
  local interval = math.floor(WINDOW / limit)
  local base = math.max(tonumber(redis.call('GET', KEYS[1]) or now_us), now_us)
  local new_tat = base + interval
  if new_tat - now_us > WINDOW then
    local wait = new_tat - now_us - WINDOW
    return {0, 0, wait, wait, false, false, false, 0}
  end
  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX',
    math.ceil((new_tat - now_us) / 1000) + 1)
  remaining = math.floor((WINDOW - (new_tat - now_us)) / interval)
  if remaining == 0 then reset_us = new_tat + interval - WINDOW - now_us end
end
local job = redis.call('HMGET', KEYS[2], 'model', 'created_at', 'record')
if not job[1] or not job[2] or not job[3] or tonumber(job[2]) <= now - tonumber(ARGV[4]) then
  return {1, remaining, reset_us, 0, false, false, false, 0}
end
local claimed = 0
local expires = redis.call('GET', KEYS[3])
if not expires or tonumber(expires) <= now then
  redis.call('SET', KEYS[3], now + tonumber(ARGV[5]), 'PX', math.ceil(tonumber(ARGV[5]) * 1000))
  claimed = 1
end
return {1, remaining, reset_us, 0, job[1], job[2], job[3], claimed}
