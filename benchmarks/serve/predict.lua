-- wrk script: POST /v1/predict with real MNIST test images as JSON.
-- wrk -s predict.lua URL -- IMAGES_IDX COUNT  (COUNT 1: {"pixels": [...]}; COUNT > 1: {"images": [[...], ...]})
local images_path, count

local function image_json(data, index)
  local offset = 16 + index * 784
  local values = {}
  for i = 1, 784 do values[i] = tostring(data:byte(offset + i)) end
  return "[" .. table.concat(values, ",") .. "]"
end

function init(args)
  images_path, count = args[1], tonumber(args[2] or "1")
  local file = assert(io.open(images_path, "rb"))
  local data = file:read("*a")
  file:close()
  local body
  if count == 1 then
    body = '{"pixels":' .. image_json(data, 0) .. '}'
  else
    local list = {}
    for i = 0, count - 1 do list[#list + 1] = image_json(data, i) end
    body = '{"images":[' .. table.concat(list, ",") .. ']}'
  end
  wrk.method = "POST"
  wrk.path = "/v1/predict"
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end

function done(summary, latency, requests)
  io.write(string.format("RESULT requests=%d seconds=%.3f rps=%.1f p50_ms=%.3f p99_ms=%.3f errors=%d non2xx=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
