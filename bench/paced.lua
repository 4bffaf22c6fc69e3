-- wrk at a fixed request rate: each thread hands out send slots 1/rate apart, and a connection
-- waits for its slot before each request, so the latency measured is the service time at that
-- rate (not the queueing of a closed loop run flat out). Usage: wrk ... -s paced.lua -- RATE
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock, bench_timespec *now);
]]
local now = ffi.new("bench_timespec")
local interval_ms, next_slot

local function now_ms()
  ffi.C.clock_gettime(1, now) -- CLOCK_MONOTONIC
  return tonumber(now.tv_sec) * 1000 + tonumber(now.tv_nsec) / 1e6
end

function init(args)
  interval_ms = 1000 / tonumber(args[1]) -- one wrk thread (-t1) hands out every slot
end

function delay()
  local t = now_ms()
  if next_slot == nil or next_slot < t then next_slot = t end
  local wait = next_slot - t
  next_slot = next_slot + interval_ms
  return wait
end
