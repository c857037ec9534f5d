-- wrk script for reliability/soak.py: a fixed rotation of fill-mask, next-sentence and tokenize
-- requests, per-status counts and a check that every 200 carries a JSON body. done() prints one
-- line "SOAK_RESULT {json}" that soak.py parses.

local texts = {
  "The capital of France is [MASK].",
  "She poured the [MASK] into a tall glass and sat down by the window.",
  "After the long winter the [MASK] finally melted and the rivers rose.",
  "He [MASK] the ball over the fence, and the crowd [MASK] to its feet.",
  "Scientists measured the [MASK] of the star using its light.",
}
local pairs_ = {
  {"The train was late again.", "Commuters crowded the platform and waited."},
  {"I planted tomatoes in spring.", "Quantum chromodynamics describes the strong force."},
  {"The museum opened at nine.", "Visitors queued outside long before that."},
}

local function json_str(s)
  return '"' .. s:gsub('\\', '\\\\'):gsub('"', '\\"') .. '"'
end

local auth = os.getenv("SOAK_TOKEN")
local headers = {["Content-Type"] = "application/json"}
if auth and auth ~= "" then headers["Authorization"] = "Bearer " .. auth end

local reqs = {}
local function add(path, body)
  table.insert(reqs, wrk.format("POST", path, headers, body))
end

-- weights: 4 single fill-mask, 1 batched fill-mask (top_k 10), 3 next-sentence, 2 tokenize
for i = 1, 4 do
  add("/v1/fill-mask", '{"inputs":' .. json_str(texts[i]) .. '}')
end
add("/v1/fill-mask", '{"inputs":[' .. json_str(texts[1]) .. ',' .. json_str(texts[5]) .. ','
    .. json_str(texts[2]) .. '],"parameters":{"top_k":10}}')
for i = 1, 3 do
  add("/v1/next-sentence", '{"inputs":{"text":' .. json_str(pairs_[i][1]) .. ',"text_pair":'
      .. json_str(pairs_[i][2]) .. '}}')
end
add("/v1/tokenize", '{"inputs":' .. json_str(texts[2]) .. '}')
add("/v1/tokenize", '{"inputs":{"text":' .. json_str(pairs_[1][1]) .. ',"text_pair":'
    .. json_str(pairs_[1][2]) .. '}}')

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
  bad_body = 0
  n = id or 0
end

function request()
  n = n + 1
  return reqs[(n % #reqs) + 1]
end

function response(status, headers, body)
  local k = tostring(status)
  statuses[k] = (statuses[k] or 0) + 1
  if status == 200 then
    local c = body:sub(1, 1)
    if c ~= "{" and c ~= "[" then bad_body = bad_body + 1 end
  end
end

function done(summary, latency, requests)
  local total = {}
  local bad = 0
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do total[k] = (total[k] or 0) + v end
    bad = bad + t:get("bad_body")
  end
  local parts = {}
  for k, v in pairs(total) do table.insert(parts, string.format('"%s":%d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    'SOAK_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"statuses":{%s},"bad_body":%d,'
    .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
    .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes, table.concat(parts, ","), bad,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
