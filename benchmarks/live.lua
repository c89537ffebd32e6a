-- wrk script of the live workload (benchmarks/live.py): one reading per POST, each from one of
-- many devices in turn, with that device's own key, 10 s of device time after its previous one.
-- Arguments after `--`: the file of device keys (one a line), the first reading's time (epoch
-- ms) and the number of wrk threads; each thread sends for its own share of the devices, so no
-- two requests carry the same device and time.

local threads = 0

function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

function init(args)
  local path, first_ms, nthreads = args[1], tonumber(args[2]), tonumber(args[3])
  keys = {}
  local i = 0
  for line in io.lines(path) do
    if i % nthreads == tid then
      keys[#keys + 1] = line
    end
    i = i + 1
  end
  start_ms = first_ms
  sent = 0
end

function request()
  local key = keys[(sent % #keys) + 1]
  local ts = start_ms + math.floor(sent / #keys) * 10000
  local body = string.format('{"ts":%d,"power_w":%d.5}', ts, 100 + sent % 900)
  sent = sent + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json", ["X-Device-Key"] = key}, body)
end
