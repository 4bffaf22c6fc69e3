-- POST /requests with a fresh Idempotency-Key and prompt per request (jobs stay queued:
-- [sim:stuck]). The tenant key comes from the environment: BENCH_KEY.
local key = os.getenv("BENCH_KEY")
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local counter = 0
request = function()
  counter = counter + 1
  local body = '{"model":"Kling-Text2Video-V2-Master","payload":{"prompt":"bench '
    .. counter .. ' [sim:stuck]","duration":"5"}}'
  return wrk.format("POST", nil, {["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. key,
    ["Idempotency-Key"] = "k" .. tostring(tid) .. "-" .. os.time() .. "-" .. counter}, body)
end
