-- wrk script for scripts/bench.py: prints the run's numbers as one JSON line.
--
-- Usage: wrk ... -s report.lua http://127.0.0.1:PORT/ [-- POST_BYTES]
--   POST_BYTES  if given, every request is a POST with a body of that many bytes.
--
-- There is deliberately no response() callback: defining one makes wrk copy every response
-- body into Lua, which would slow the load generator (1 MiB per response in one case) and so
-- measure wrk rather than the server. Per-connection counts come from the kernel instead (ss).
--
-- The output line starts with BENCH_JSON so bench.py can find it among wrk's own text.

function init(args)
   local post_bytes = tonumber(args[1] or "")
   if post_bytes then
      wrk.method = "POST"
      wrk.body = string.rep("p", post_bytes)
      wrk.headers["Content-Type"] = "application/octet-stream"
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"duration_us":%d,"requests":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
      summary.duration, summary.requests, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
