-- The request mix of `python -m bench.load` (bench/load.py), for wrk -t N -c N: one connection per
-- thread, each thread one user. bench/load.py runs this file behind a generated prelude that defines
--   USERS: a list of {name = "user-00", token = "<HS256 bearer token>", ids = {<seeded task ids>}}
--   SEED:  the base of the per-thread random seeds
-- Per request: 60% list (limit=50), 15% get, 10% create, 10% replace (PUT), 5% toggle completion.
-- done() prints "BENCH <name> <value>" lines (latencies in microseconds) for bench/load.py to parse.

local next_index = 0

function setup(thread)
  -- Runs in the main Lua state, once per thread, before the thread's init(): thread i is user i % #USERS.
  local user = USERS[(next_index % #USERS) + 1]
  thread:set("index", next_index)
  thread:set("user", user.name)
  thread:set("token", user.token)
  thread:set("ids", user.ids)  -- wrk copies the table into the thread's Lua state
  next_index = next_index + 1
end

local base, auth, auth_json
local counter = 0
local WORDS = {
  "groceries", "report", "invoice", "meeting", "dentist", "garden", "laundry", "slides",
  "budget", "tickets", "birthday", "repairs", "backup", "newsletter", "interview", "lunch",
}

function init(args)
  math.randomseed(SEED + index)
  base = "/api/" .. user .. "/tasks"
  auth = { ["Authorization"] = "Bearer " .. token }
  auth_json = { ["Authorization"] = auth["Authorization"], ["Content-Type"] = "application/json" }
end

local function word()
  return WORDS[math.random(#WORDS)]
end

local function task_path()
  return base .. "/" .. ids[math.random(#ids)]
end

local function body(verb, extra)
  counter = counter + 1
  return string.format(
    '{"title": "%s the %s and the %s %d", "description": "Thread %d: remember the %s before the %s, '
      .. 'then tick it off."%s}',
    verb, word(), word(), counter, index, word(), word(), extra
  )
end

function request()
  local pick = math.random(100)
  if pick <= 60 then
    return wrk.format("GET", base .. "?limit=50", auth)
  elseif pick <= 75 then
    return wrk.format("GET", task_path(), auth)
  elseif pick <= 85 then
    return wrk.format("POST", base, auth_json, body("Sort out", ""))
  elseif pick <= 95 then
    return wrk.format("PUT", task_path(), auth_json, body("Redo", ', "completed": false'))
  else
    return wrk.format("PATCH", task_path() .. "/complete", auth)
  end
end

function done(summary, latency, requests)
  local errors = summary.errors
  local lines = {
    { "requests", summary.requests },
    { "duration_us", summary.duration },
    { "connect", errors.connect },
    { "read", errors.read },
    { "write", errors.write },
    { "timeout", errors.timeout },
    { "status", errors.status },
    { "p50_us", latency:percentile(50) },
    { "p95_us", latency:percentile(95) },
    { "p99_us", latency:percentile(99) },
    { "mean_us", latency.mean },
    { "max_us", latency.max },
  }
  for _, line in ipairs(lines) do
    io.write(string.format("BENCH %s %d\n", line[1], math.floor(line[2])))
  end
end
