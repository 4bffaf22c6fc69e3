-- The memory soak's traffic: every route of the hot path in turn (a submit in ten requests).
-- BENCH_KEY is the tenant key; BENCH_PATHS the GET paths, comma-separated; BENCH_SUBMIT the
-- submit path.
local key = os.getenv("BENCH_KEY")
local submit = os.getenv("BENCH_SUBMIT")
local paths = {}
for path in string.gmatch(os.getenv("BENCH_PATHS"), "[^,]+") do paths[#paths + 1] = path end
local counter = 0
request = function()
  counter = counter + 1
  if counter % 10 == 0 then
    local body = '{"model":"Kling-Text2Video-V2-Master","payload":{"prompt":"soak '
      .. counter .. ' [sim:stuck]"}}'
    return wrk.format("POST", submit, {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. key},
      body)
  end
  return wrk.format("GET", paths[counter % #paths + 1], {["Authorization"] = "Bearer " .. key})
end
