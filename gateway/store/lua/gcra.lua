-- The GCRA of gateway/store/limits.py, for the scripts that take a rate: RedisStore puts this
-- file in front of them when it loads them. Every number stays under 2^53, so it is exact, and
-- so are floor and ceil of the quotients taken (their fractional parts, when not 0, are far
-- above a double's rounding).
local WINDOW = 60000000
-- A rate key outlives its TAT by a window: Redis expires it by its own clock, and a replica whose
-- clock runs ahead of another's would otherwise drop state the other still counts on (a TAT in
-- the past reads as now, so the longer life changes no answer).
local RATE_KEY_MARGIN_MS = 60000

-- A stored TAT as whole µs and a remainder in 1/limit µs, never earlier than now_us
-- (limits._tat_parts: negative is this format, non-negative the previous release's plain µs).
local function tat_parts(stored, limit, now_us)
  if not stored then return now_us, 0 end
  local us, rem = tonumber(stored), 0
  if string.sub(stored, 1, 1) == '-' then
    us, rem = tonumber(string.sub(stored, 2, -8)), tonumber(string.sub(stored, -7))
  end
  if rem >= limit then us, rem = us + 1, 0 end
  if us < now_us then return now_us, 0 end
  return us, rem
end

-- One request against the TAT (us, rem) (limits.rate_take). Admitted: true, the new TAT,
-- remaining, reset µs. Refused: false, the TAT unchanged, 0, the wait µs.
local function gcra_take(us, rem, limit, now_us)
  local next_us = us + math.floor(WINDOW / limit)
  local next_rem = rem + WINDOW % limit
  if next_rem >= limit then next_us, next_rem = next_us + 1, next_rem - limit end
  local ahead = next_us - now_us
  if ahead > WINDOW or (ahead == WINDOW and next_rem > 0) then
    return false, us, rem, 0, ahead - WINDOW + (next_rem > 0 and 1 or 0)
  end
  local backlog = ahead * limit + next_rem
  local remaining = math.floor((WINDOW * limit - backlog) / WINDOW)
  local reset_us = 0
  if remaining == 0 then reset_us = math.ceil((backlog + WINDOW - WINDOW * limit) / limit) end
  return true, next_us, next_rem, remaining, reset_us
end

-- The stored form of a TAT (limits._stored_tat).
local function stored_tat(us, rem)
  return string.format('-%d%07d', us, rem)
end

