-- Exact RTT and handshake percentiles per workload, DNS latency per workload.
SELECT namespace, workload, count(tcp_srtt_us) AS rtt_samples,
  percentile_cont(0.5) WITHIN GROUP (ORDER BY tcp_srtt_us) AS rtt_p50_us,
  percentile_cont(0.99) WITHIN GROUP (ORDER BY tcp_srtt_us) AS rtt_p99_us,
  percentile_cont(0.95) WITHIN GROUP (ORDER BY tcp_handshake_us) AS handshake_p95_us,
  percentile_cont(0.95) WITHIN GROUP (ORDER BY dns_latency_us) AS dns_p95_us
FROM pod_latency GROUP BY namespace, workload ORDER BY namespace, workload
