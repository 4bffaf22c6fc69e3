-- GCRA: admit one read or refuse without consuming (same arithmetic as limits.rate_take).
-- KEYS[1] read rate (TAT, µs); ARGV[1] now µs, ARGV[2] limit per minute
local WINDOW = 60000000
local now_us = tonumber(ARGV[1])
local interval = math.floor(WINDOW / tonumber(ARGV[2]))
local tat = tonumber(redis.call('GET', KEYS[1]) or now_us)
local base = math.max(tat, now_us)
local new_tat = base + interval
if new_tat - now_us > WINDOW then
  local wait = new_tat - now_us - WINDOW
  return {0, 0, wait, wait}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now_us) / 1000) + 1)
local remaining = math.floor((WINDOW - (new_tat - now_us)) / interval)
local reset_us = 0
if remaining == 0 then reset_us = new_tat + interval - WINDOW - now_us end
return {1, remaining, reset_us, 0}
