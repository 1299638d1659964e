-- wrk script for benches/load.sh: one machine-readable line at the end.
-- Latencies are in microseconds; duration too.

-- TLS URLs name the routed host (https://bench.local:PORT/) so that it is
-- the SNI; it is in no resolver: every name is 127.0.0.1 here.
wrk.resolve = function(host, service)
   wrk.addrs = wrk.lookup("127.0.0.1", service)
end

done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "LOADRESULT requests=%d duration_us=%d p50_us=%d p99_us=%d " ..
      "p95_us=%d p98_us=%d p999_us=%d " ..
      "err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d bytes=%d\n",
      summary.requests, summary.duration,
      latency:percentile(50), latency:percentile(99),
      latency:percentile(95), latency:percentile(98), latency:percentile(99.9),
      e.connect, e.read, e.write, e.status, e.timeout, summary.bytes))
end
